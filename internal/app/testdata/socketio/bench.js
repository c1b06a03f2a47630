// Closed-loop Socket.IO request benchmark on the real npm socket.io-client
// (scripts/bench-socketio.sh runs it).
//
// Usage: node bench.js '<config JSON>'
//   {"url", "token", "inflight": 16, "connections": 1, "seconds": 10, "warmup": 2,
//    "request": {"command": "list", "module": "cameras"}, "transport": "websocket"}
// Each connection keeps its share of the in-flight requests busy: an answer
// (on the event named by the request's requestId) sends the next request.
// It prints one JSON line: the round trips a second and latency percentiles.
'use strict';
const { io } = require('socket.io-client');

const cfg = Object.assign({ inflight: 16, connections: 1, seconds: 10, warmup: 2, transport: 'websocket',
  request: { command: 'list', module: 'cameras' } }, JSON.parse(process.argv[2]));

let measuring = false;
let done = false;
const lat = [];
let errors = 0;
let seq = 0;

function connect() {
  return new Promise((resolve, reject) => {
    const s = io(cfg.url, { auth: { token: cfg.token, logLevel: 'off' }, transports: [cfg.transport], reconnection: false });
    s.once('connect', () => resolve(s));
    s.once('connect_error', (e) => reject(new Error('connect_error: ' + e.message)));
  });
}

function worker(s, pending) {
  const send = () => {
    if (done) return;
    const id = 'b' + (seq++).toString(36);
    pending.set(id, process.hrtime.bigint());
    s.emit('request', Object.assign({ requestId: id }, cfg.request));
  };
  return send;
}

(async () => {
  const sockets = [];
  for (let i = 0; i < cfg.connections; i++) sockets.push(await connect());
  for (let i = 0; i < sockets.length; i++) {
    const s = sockets[i];
    const pending = new Map();
    const send = worker(s, pending);
    s.onAny((name, arg) => {
      const start = pending.get(name);
      if (start === undefined) return;
      pending.delete(name);
      if (measuring) {
        lat.push(Number(process.hrtime.bigint() - start) / 1e6);
        if (arg && arg.error) errors++;
      }
      send();
    });
    const share = Math.floor(cfg.inflight / sockets.length) + (i < cfg.inflight % sockets.length ? 1 : 0);
    for (let k = 0; k < share; k++) send();
  }
  await new Promise((r) => setTimeout(r, cfg.warmup * 1000));
  measuring = true;
  const t0 = process.hrtime.bigint();
  await new Promise((r) => setTimeout(r, cfg.seconds * 1000));
  measuring = false;
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  done = true;
  lat.sort((a, b) => a - b);
  const pct = (p) => (lat.length ? Math.round(lat[Math.min(lat.length - 1, Math.floor(p * lat.length))] * 100) / 100 : null);
  console.log(JSON.stringify({ request: cfg.request, inflight: cfg.inflight, connections: cfg.connections,
    transport: cfg.transport, requests: lat.length, errors, seconds: Math.round(secs * 100) / 100,
    rps: Math.round(lat.length / secs), p50_ms: pct(0.5), p90_ms: pct(0.9), p99_ms: pct(0.99) }));
  sockets.forEach((s) => s.disconnect());
  process.exit(errors ? 1 : 0);
})().catch((e) => { console.error(e.message); process.exit(2); });
