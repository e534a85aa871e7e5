/** shared/wake.ts wakeOn: wakes on the item's event, on close, or on time; leaves no listener behind. */
import t from 'tap';
import { EventEmitter } from 'node:events';
import { wakeOn } from '../../shared/wake.js';

const listeners = (e: EventEmitter) => e.eventNames().reduce((n, name) => n + e.listenerCount(name), 0);

t.test("another item's event does not wake; this item's does", async (t) => {
  const source = new EventEmitter();
  const stream = new EventEmitter();
  let woke = false;
  const p = wakeOn(source, ['log', 'end'], 'dep_1', stream, 60_000).then(() => (woke = true));
  source.emit('log', 'dep_2');
  await new Promise((r) => setImmediate(r));
  t.equal(woke, false);
  source.emit('end', 'dep_1');
  await p;
  t.equal(woke, true);
  t.same([listeners(source), listeners(stream)], [0, 0]);
});

t.test('the stream closing or the time running out also wakes', async (t) => {
  const source = new EventEmitter();
  const stream = new EventEmitter();
  const closed = wakeOn(source, ['log'], 'dep_1', stream, 60_000);
  stream.emit('close');
  await closed;
  const started = Date.now();
  await wakeOn(source, ['log'], 'dep_1', stream, 30);
  t.ok(Date.now() - started >= 25, 'woke by the timer');
  t.same([listeners(source), listeners(stream)], [0, 0]);
});
