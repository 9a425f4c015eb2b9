// Starts the real warren-server binary with the AMQP and management listeners on free ports and a
// temporary data directory, reads both ports from the startup line
// (`... amqp=[::]:PORT mgmt=[::]:PORT ...`), and stops it with SIGTERM.
'use strict';
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const BIN = process.env.WARREN_BIN || path.join(__dirname, '..', '..', 'target', 'debug', 'warren-server');

function start() {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'warren-browser-'));
  const proc = spawn(BIN, ['--port', '0', '--management-port', '0', '--data-dir', dataDir],
    { stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('warren-server did not print its listening line')), 20000);
    let out = '';
    proc.stdout.on('data', (chunk) => {
      out += chunk.toString();
      const amqp = /amqp=\S*?:(\d+)/.exec(out);
      const mgmt = /mgmt=\S*?:(\d+)/.exec(out);
      if (amqp && mgmt) {
        clearTimeout(timer);
        resolve({
          amqpPort: Number(amqp[1]),
          mgmtPort: Number(mgmt[1]),
          url: `http://127.0.0.1:${mgmt[1]}/`,
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

// The management API as guest, for setting up and checking what the console did.
function api(broker, user = 'guest', pass = 'guest') {
  const auth = `Basic ${Buffer.from(`${user}:${pass}`).toString('base64')}`;
  return async (method, p, body) => {
    const r = await fetch(`${broker.url}api${p}`, {
      method,
      headers: { Authorization: auth, 'Content-Type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await r.text();
    return { status: r.status, body: text ? JSON.parse(text) : null };
  };
}

module.exports = { start, api };
