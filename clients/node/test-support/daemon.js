// Test support: a real keyhavend in a private temporary tree, and small
// helpers. Not a test file (node --test runs every file under test/).
//
// The daemon binary comes from $KEYHAVEND; there is no fallback, so a run
// that cannot find it fails with a message saying what to set, instead of
// testing something else. Each daemon gets its own HOME, XDG_RUNTIME_DIR
// (mode 0700, so the default socket path and its checks are exercised),
// data directory and key file, and is ready when it logs that it is serving.
'use strict';

const { spawn } = require('child_process');
const fs = require('fs');
const net = require('net');
const os = require('os');
const path = require('path');

const START_TIMEOUT_MS = 30000;
const STOP_TIMEOUT_MS = 10000;

function keyhavend() {
  const bin = process.env.KEYHAVEND;
  if (!bin) {
    throw new Error(
      'KEYHAVEND is not set: these tests run against a real keyhavend. Build it ' +
        '(cargo build -p keyhaven-daemon) and run KEYHAVEND=<repository>/target/debug/keyhavend node --test',
    );
  }
  if (!path.isAbsolute(bin)) throw new Error(`KEYHAVEND must be an absolute path, not ${JSON.stringify(bin)}`);
  try {
    fs.accessSync(bin, fs.constants.X_OK);
  } catch (e) {
    throw new Error(`KEYHAVEND=${bin} is not an executable file (${e.code})`);
  }
  return bin;
}

/** A private temporary directory (0700), removed by `cleanup()`. */
function tempTree(prefix = 'keyhaven-node-') {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  fs.chmodSync(root, 0o700);
  return { root, cleanup: () => fs.rmSync(root, { recursive: true, force: true }) };
}

/**
 * Starts keyhavend; resolves to {socket, env, log(), stop()}. `env` is what
 * a Client needs to find this daemon's default socket: {XDG_RUNTIME_DIR}.
 */
function startDaemon() {
  const bin = keyhavend();
  const tree = tempTree();
  const home = path.join(tree.root, 'home');
  const run = path.join(tree.root, 'run');
  for (const dir of [home, run]) fs.mkdirSync(dir, { mode: 0o700 });
  const child = spawn(bin, ['--data-dir', path.join(tree.root, 'data'), '--key-file', path.join(tree.root, 'keyhaven.key')], {
    // Nothing of the caller's keyhaven, XDG, D-Bus or systemd settings.
    env: { PATH: process.env.PATH || '/usr/bin:/bin', HOME: home, XDG_RUNTIME_DIR: run },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const killOnExit = () => child.kill('SIGKILL');
  process.on('exit', killOnExit);
  let log = '';
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`keyhavend did not start within ${START_TIMEOUT_MS} ms:\n${log}`));
    }, START_TIMEOUT_MS);
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk) => {
      log += chunk;
      if (log.includes('keyhavend is serving')) {
        clearTimeout(timer);
        resolve(daemon);
      }
    });
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(new Error(`cannot start ${bin}: ${e.message}`));
    });
    exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`keyhavend exited (${code ?? signal}) before serving:\n${log}`));
    });
    const daemon = {
      socket: path.join(run, 'keyhaven', 'keyhaven.sock'),
      env: { XDG_RUNTIME_DIR: run },
      pid: child.pid,
      log: () => log,
      async stop() {
        if (child.exitCode === null && child.signalCode === null) {
          child.kill('SIGTERM');
          const timeout = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
          await exited;
          clearTimeout(timeout);
        }
        process.removeListener('exit', killOnExit);
        tree.cleanup();
      },
    };
  });
}

/**
 * A plain Unix socket server that accepts and never answers, counting what
 * it receives. `nothingReceived()` proves that no client connected before
 * it was called: it connects itself and says a marker, and since the
 * listener accepts connections in order, any earlier connection has been
 * counted by the time the marker arrives.
 */
function silentServer(socketPath) {
  const MARKER = 'probe-from-the-test';
  const sockets = new Set();
  let bytes = 0;
  let connections = 0;
  let onMarker = null;
  const server = net.createServer((socket) => {
    connections += 1;
    sockets.add(socket);
    socket.on('data', (d) => {
      if (onMarker && d.toString() === MARKER) {
        connections -= 1;
        onMarker();
      } else {
        bytes += d.length;
      }
    });
    socket.on('error', () => {});
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, () =>
      resolve({
        received: () => ({ connections, bytes }),
        async nothingReceived() {
          const marked = new Promise((r) => {
            onMarker = r;
          });
          const probe = net.connect(socketPath, () => probe.write(MARKER));
          probe.on('error', () => {});
          await marked;
          onMarker = null;
          probe.destroy();
          return connections === 0 && bytes === 0;
        },
        close() {
          for (const s of sockets) s.destroy();
          return new Promise((r) => server.close(() => r()));
        },
      }),
    );
  });
}

module.exports = { startDaemon, silentServer, tempTree };
