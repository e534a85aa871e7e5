import t from 'tap';
import { MaintenanceSchedule, MaintenanceWindow } from '../../../agent/phases/schedule.js';

const at = (s: string): number => Date.parse(s);
// 2026-11-28 is a Saturday.

t.test('Sat 02:00-06:00 UTC: inside, edges, outside, next opening', async (t) => {
  const s = MaintenanceSchedule.parse(['Sat 02:00-06:00 UTC']);
  t.notOk(s.isWithin(at('2026-11-28T01:59:59Z')));
  t.ok(s.isWithin(at('2026-11-28T02:00:00Z')), 'start is inclusive');
  t.ok(s.isWithin(new Date('2026-11-28T05:59:59Z')), 'accepts Date');
  t.notOk(s.isWithin(at('2026-11-28T06:00:00Z')), 'end is exclusive');
  t.equal(s.closesAt(at('2026-11-28T03:00:00Z'))?.toISOString(), '2026-11-28T06:00:00.000Z');
  t.equal(s.closesAt(at('2026-11-28T07:00:00Z')), undefined);
  t.equal(s.nextOpen(at('2026-11-28T03:00:00Z'))?.toISOString(), '2026-11-28T03:00:00.000Z', 'open now: now');
  t.equal(s.nextOpen(at('2026-11-28T06:00:00Z'))?.toISOString(), '2026-12-05T02:00:00.000Z', 'just closed: next week');
  t.equal(s.nextOpen(at('2026-11-25T12:00:00Z'))?.toISOString(), '2026-11-28T02:00:00.000Z', 'Wednesday: this Saturday');
});

t.test('crossing midnight belongs to the start day', async (t) => {
  const s = MaintenanceSchedule.parse(['Fri 22:00-02:00 UTC']);
  t.ok(MaintenanceWindow.parse('Fri 22:00-02:00 UTC').crossesMidnight);
  t.ok(s.isWithin(at('2026-11-27T23:30:00Z')), 'Friday night');
  t.ok(s.isWithin(at('2026-11-28T01:59:00Z')), 'Saturday early morning, still Friday window');
  t.notOk(s.isWithin(at('2026-11-28T02:00:00Z')));
  t.notOk(s.isWithin(at('2026-11-28T23:00:00Z')), 'Saturday night is not a Friday');
  t.notOk(s.isWithin(at('2026-11-27T01:00:00Z')), 'Friday early morning belongs to Thursday');
  t.equal(s.closesAt(at('2026-11-27T23:00:00Z'))?.toISOString(), '2026-11-28T02:00:00.000Z');
  t.equal(s.nextOpen(at('2026-11-28T03:00:00Z'))?.toISOString(), '2026-12-04T22:00:00.000Z');
});

t.test('day lists, ranges, wrap-around ranges, Daily, 24:00', async (t) => {
  const weekend = MaintenanceWindow.parse('Sat,Sun 00:00-24:00 UTC');
  t.same([...weekend.days].sort(), [0, 6]);
  t.same([...MaintenanceWindow.parse('Mon-Fri 09:00-17:00 UTC').days].sort(), [1, 2, 3, 4, 5]);
  t.same([...MaintenanceWindow.parse('fri-mon 09:00-17:00 UTC').days].sort(), [0, 1, 5, 6]);
  t.equal(MaintenanceWindow.parse('Daily 01:00-03:00 UTC').days.size, 7);
  const s = new MaintenanceSchedule([weekend]);
  t.ok(s.isWithin(at('2026-11-29T23:59:59Z')));
  t.notOk(s.isWithin(at('2026-11-30T00:00:00Z')));
  t.equal(s.closesAt(at('2026-11-28T10:00:00Z'))?.toISOString(), '2026-11-30T00:00:00.000Z', 'back-to-back days join into one period');
});

t.test('adjacent windows in different entries chain for closesAt', async (t) => {
  const s = MaintenanceSchedule.parse(['Sat 02:00-04:00 UTC', 'Sat 04:00-06:00 UTC', 'Sat 05:00-07:00 UTC']);
  t.equal(s.closesAt(at('2026-11-28T03:00:00Z'))?.toISOString(), '2026-11-28T07:00:00.000Z');
  t.equal(s.nextOpen(at('2026-11-28T08:00:00Z'))?.toISOString(), '2026-12-05T02:00:00.000Z');
  t.equal(new MaintenanceSchedule([]).nextOpen(0), undefined);
});

t.test('IANA time zones use the local wall clock, across DST', async (t) => {
  const s = MaintenanceSchedule.parse(['Sat 02:00-06:00 Europe/Paris']);
  // Winter: UTC+1, so 02:00 Paris = 01:00Z.
  t.ok(s.isWithin(at('2026-11-28T01:00:00Z')));
  t.notOk(s.isWithin(at('2026-11-28T00:59:00Z')));
  t.equal(s.closesAt(at('2026-11-28T02:00:00Z'))?.toISOString(), '2026-11-28T05:00:00.000Z');
  // Summer: UTC+2, so 02:00 Paris = 00:00Z. 2026-07-04 is a Saturday.
  t.ok(s.isWithin(at('2026-07-04T00:00:00Z')));
  t.notOk(s.isWithin(at('2026-07-04T04:00:00Z')));
  // From a Wednesday in March, the next window is Sat 2026-03-28 (still winter: 01:00Z).
  t.equal(s.nextOpen(at('2026-03-25T12:00:00Z'))?.toISOString(), '2026-03-28T01:00:00.000Z');
  // The following Saturday is after the spring-forward (2026-03-29): 00:00Z.
  t.equal(s.nextOpen(at('2026-03-28T06:00:00Z'))?.toISOString(), '2026-04-04T00:00:00.000Z');
  const ny = MaintenanceSchedule.parse(['Sun 01:00-03:00 America/New_York']);
  // 2026-11-01 is the fall-back Sunday in New York; the window spans 3 real hours.
  t.equal(ny.nextOpen(at('2026-10-31T12:00:00Z'))?.toISOString(), '2026-11-01T05:00:00.000Z');
  t.equal(ny.closesAt(at('2026-11-01T05:30:00Z'))?.toISOString(), '2026-11-01T08:00:00.000Z');
});

t.test('malformed windows are refused with the bad part named', async (t) => {
  const cases: Array<[string, RegExp]> = [
    ['Sat 02:00-06:00', /must look like/],
    ['Caturday 02:00-06:00 UTC', /"caturday" is not a day/],
    ['Sat 2:00-06:00 UTC', /"2:00" is not a time/],
    ['Sat 02:00-25:00 UTC', /"25:00" is not a time/],
    ['Sat 02:60-06:00 UTC', /"02:60" is not a time/],
    ['Sat 02:00-02:00 UTC', /must differ/],
    ['Sat 24:00-02:00 UTC', /before 24:00/],
    ['Sat 02:00-06:00 Mars/Olympus', /unknown time zone/],
    ['Sat 02:00~06:00 UTC', /not a range/],
    ['Mon-Tue-Wed 02:00-06:00 UTC', /not a day/],
    ['x'.repeat(300), /at most 200/],
  ];
  for (const [text, message] of cases) {
    t.throws(() => MaintenanceWindow.parse(text), { code: 'UPLINK_ERR_CONFIG_INVALID', message }, text);
  }
  t.throws(() => MaintenanceSchedule.parse(Array(65).fill('Sat 02:00-06:00 UTC')), /at most 64/);
});
