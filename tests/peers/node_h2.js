// Node.js HTTP/2 peer (core `http2`, cleartext h2c with prior knowledge).
//
//   node node_h2.js server PORT      serve /ok 200, /fail 500, anything else 404 on 127.0.0.1:PORT
'use strict';

const http2 = require('http2');

const ROUTES = { '/ok': [200, 'ok\n'], '/fail': [500, 'fail\n'] };

const [mode, port] = process.argv.slice(2);
if (mode !== 'server') {
  console.error(`unknown mode ${mode}`);
  process.exit(2);
}
const server = http2.createServer();
server.on('stream', (stream, headers) => {
  const path = headers[':path'].split('?')[0];
  const [status, body] = ROUTES[path] || [404, 'missing\n'];
  stream.respond({ ':status': status, 'content-type': 'text/plain' });
  stream.end(body);
});
server.listen(Number(port), '127.0.0.1', () => console.log(`listening on 127.0.0.1:${port}`));
