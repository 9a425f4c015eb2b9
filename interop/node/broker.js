// Starts the real warren-server binary on a free port with a temporary data directory and stops it
// with SIGTERM; the port is read from the startup line (`... amqp=[::]:PORT ...`).
'use strict';
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const BIN = process.env.WARREN_BIN || path.join(__dirname, '..', '..', 'target', 'debug', 'warren-server');

function start(extraArgs = []) {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'warren-node-'));
  const proc = spawn(BIN, ['--port', '0', '--data-dir', dataDir, ...extraArgs], { stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('warren-server did not print its listening line')), 20000);
    let out = '';
    proc.stdout.on('data', (chunk) => {
      out += chunk.toString();
      const m = /amqp=\S*?:(\d+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve({
          port: Number(m[1]),
          stop: () => new Promise((res) => {
            proc.once('exit', () => { fs.rmSync(dataDir, { recursive: true, force: true }); res(); });
            proc.kill('SIGTERM');
          }),
        });
      }
    });
    proc.once('exit', (code) => reject(new Error(`warren-server exited early with ${code}`)));
  });
}

module.exports = { start };
