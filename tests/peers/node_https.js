// Node.js HTTPS peer (core `https`; Node's TLS is the OpenSSL linked into `node`, behind
// memory BIOs).
//
//   node node_https.js server PORT CERT KEY                   /ok 200, anything else 404
//   node node_https.js proxy PORT CERT KEY CA DOWNSTREAM      any path: GET DOWNSTREAM over
//                                                             HTTPS, then answer its status
//   node node_https.js client CA URL...                       GET each URL in turn over one
//                                                             keep-alive agent, print "STATUS URL"
'use strict';

const fs = require('fs');
const https = require('https');

function serve(port, cert, key) {
  const server = https.createServer({ cert: fs.readFileSync(cert), key: fs.readFileSync(key) }, (req, res) => {
    req.resume();
    const status = req.url === '/ok' ? 200 : 404;
    res.writeHead(status, { 'Content-Type': 'text/plain', 'Content-Length': 3 });
    res.end('ok\n');
  });
  server.listen(port, '127.0.0.1', () => console.log(`listening on 127.0.0.1:${port}`));
}

async function client(ca, urls) {
  const agent = new https.Agent({ keepAlive: true, ca: fs.readFileSync(ca) });
  for (const url of urls) {
    const status = await new Promise((resolve, reject) => {
      https.get(url, { agent }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode));
      }).on('error', reject);
    });
    console.log(`${status} ${url}`);
  }
  agent.destroy();
}

function proxy(port, cert, key, ca, downstream) {
  const agent = new https.Agent({ keepAlive: true, ca: fs.readFileSync(ca) });
  const server = https.createServer({ cert: fs.readFileSync(cert), key: fs.readFileSync(key) }, (req, res) => {
    req.resume();
    https.get(downstream, { agent }, (down) => {
      down.resume();
      down.on('end', () => {
        res.writeHead(down.statusCode, { 'Content-Type': 'text/plain', 'Content-Length': 3 });
        res.end('ok\n');
      });
    }).on('error', () => {
      res.writeHead(502, { 'Content-Length': 0 });
      res.end();
    });
  });
  server.listen(port, '127.0.0.1', () => console.log(`listening on 127.0.0.1:${port}`));
}

const [mode, ...args] = process.argv.slice(2);
if (mode === 'server') {
  serve(Number(args[0]), args[1], args[2]);
} else if (mode === 'proxy') {
  proxy(Number(args[0]), args[1], args[2], args[3], args[4]);
} else if (mode === 'client') {
  client(args[0], args.slice(1)).catch((e) => {
    console.error(e);
    process.exit(1);
  });
} else {
  console.error(`unknown mode ${mode}`);
  process.exit(2);
}
