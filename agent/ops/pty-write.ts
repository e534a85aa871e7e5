/**
 * Input to a PTY without a trip through the thread pool.
 *
 * node-pty 1.1 queues every write and performs it with `fs.write`, which runs on libuv's
 * thread pool: each keystroke of a shell costs a hand-off to a worker thread and back
 * (futex wake-ups and an extra turn of the event loop in the agent, seen with `strace -c`
 * as five futex calls and a third write per keystroke). The PTY's master descriptor is
 * non-blocking (node-pty sets O_NONBLOCK on it), so a write that fits in the terminal's
 * input buffer can be made on the spot: `writeSync` returns at once with what the kernel
 * took, or fails with EAGAIN when the buffer is full.
 *
 * Order is kept: bytes are written directly only while node-pty's own queue is empty;
 * whatever the kernel did not take, and everything after it until the queue drains, goes
 * through node-pty as before (which retries on EAGAIN). Any other error is left to node-pty
 * too. If a node-pty release changes the internals this relies on, every write takes
 * node-pty's path.
 *
 * The descriptor is closed when node-pty's read socket is destroyed (end of the program, or
 * the session's own exit drain), and node-pty learns it only a little later ('close'). From
 * the destroy on, the number may already belong to another file of the agent's, so input is
 * dropped: the terminal that would have read it is gone. pty-session.ts's exit drain stops
 * reading at the same point for the same reason.
 */
import { writeSync } from 'node:fs';
import type { IPty } from 'node-pty';

interface PtyInternals {
  fd?: unknown;
  _socket?: { destroyed?: unknown };
  _writeStream?: { _writeQueue?: unknown };
}

/** A function that writes `data` to the PTY's input, directly when it can. */
export function ptyWriter(pty: IPty): (data: Buffer) => void {
  const internals = pty as unknown as PtyInternals;
  const fd = internals.fd;
  const socket = internals._socket;
  const queue = internals._writeStream?._writeQueue;
  if (typeof fd !== 'number' || !Array.isArray(queue) || typeof socket?.destroyed !== 'boolean') return (data) => pty.write(data);
  return (data) => {
    if (socket.destroyed) return;
    if (queue.length === 0) {
      let written = 0;
      try {
        written = writeSync(fd, data);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EAGAIN') {
          pty.write(data);
          return;
        }
      }
      if (written === data.length) return;
      data = data.subarray(written);
    }
    pty.write(data);
  };
}
