// Peer: a Node.js `ws` server with the minimal broadcast protocol of bench/peers/
// (see websockets_broadcast.py): {"type":"ping"} -> {"type":"pong"};
// {"type":"publish","id":K,"pad":"..."} -> {"type":"bcast","id":K,"pad":"..."} to every client,
// encoded once.  No compression (as the hub).  Prints "listening on ws://HOST:PORT".
'use strict';
const { WebSocketServer, WebSocket } = require('ws');

const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, backlog: 2048, perMessageDeflate: false, clientTracking: true });

wss.on('listening', () => {
  const { address, port } = wss.address();
  process.stdout.write(`listening on ws://${address}:${port}\n`);
});

wss.on('connection', (ws) => {
  ws.on('message', (data) => {
    const text = data.toString();
    if (text.startsWith('{"type":"ping"')) {
      ws.send('{"type":"pong"}');
    } else if (text.startsWith('{"type":"publish"')) {
      const msg = JSON.parse(text);
      const frame = JSON.stringify({ type: 'bcast', id: msg.id, pad: msg.pad });
      for (const client of wss.clients) {
        if (client.readyState === WebSocket.OPEN) client.send(frame);
      }
    }
  });
});

for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => { wss.close(); process.exit(0); });
}
