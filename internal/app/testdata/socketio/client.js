// A Socket.IO client for the Go tests, on the real npm socket.io-client
// (4.8.4, installed next to this file by scripts/test.sh).
//
// Usage: node client.js '<config JSON>'
//   config: {"url": "http://127.0.0.1:port", "opts": {socket.io-client options}}
//
// It reports on stdout, one JSON object a line:
//   {"t":"connect","id":sid,"transport":name}
//   {"t":"connect_error","message":..., "data":...}
//   {"t":"disconnect","reason":...}
//   {"t":"event","name":..., "arg":...}      every event the server emits
//   {"t":"ack","n":n,"arg":...}              an acknowledgement's answer
//   {"t":"upgrade","transport":name}
//   {"t":"paused"} / {"t":"resumed"}
// and takes commands on stdin, one JSON object a line:
//   {"op":"emit","event":"request","arg":{...},"ack":n}   ack optional
//   {"op":"pause"}  stop reading the WebSocket's TCP socket (a stuck client)
//   {"op":"resume"}
//   {"op":"disconnect"} / {"op":"exit"}
'use strict';
const { io } = require('socket.io-client');
const readline = require('readline');

const config = JSON.parse(process.argv[2]);
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');

const socket = io(config.url, Object.assign({ reconnection: false, timeout: 10000 }, config.opts || {}));

socket.on('connect', () => {
  const engine = socket.io.engine;
  out({ t: 'connect', id: socket.id, transport: engine.transport.name });
  engine.on('upgrade', (tr) => out({ t: 'upgrade', transport: tr.name }));
});
socket.on('connect_error', (err) => out({ t: 'connect_error', message: err.message, data: err.data === undefined ? null : err.data }));
socket.on('disconnect', (reason) => out({ t: 'disconnect', reason }));
socket.onAny((name, arg) => out({ t: 'event', name, arg: arg === undefined ? null : arg }));

// tcp is the net.Socket under the WebSocket transport (ws), when there is one.
function tcp() {
  const tr = socket.io.engine && socket.io.engine.transport;
  return tr && tr.ws && tr.ws._socket;
}

const rl = readline.createInterface({ input: process.stdin });
rl.on('line', (line) => {
  if (!line.trim()) return;
  const cmd = JSON.parse(line);
  switch (cmd.op) {
    case 'emit':
      if (cmd.ack !== undefined && cmd.ack !== null) {
        socket.emit(cmd.event, cmd.arg, (arg) => out({ t: 'ack', n: cmd.ack, arg: arg === undefined ? null : arg }));
      } else if (cmd.arg === undefined) {
        socket.emit(cmd.event);
      } else {
        socket.emit(cmd.event, cmd.arg);
      }
      break;
    case 'pause': {
      const s = tcp();
      if (s) s.pause();
      out({ t: s ? 'paused' : 'cannot_pause' });
      break;
    }
    case 'resume': {
      const s = tcp();
      if (s) s.resume();
      out({ t: 'resumed' });
      break;
    }
    case 'disconnect':
      socket.disconnect();
      break;
    case 'exit':
      process.exit(0);
  }
});
rl.on('close', () => process.exit(0));
