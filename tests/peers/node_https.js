// Node.js HTTPS peer (core `https`): Node's TLS is OpenSSL behind memory BIOs, so the agent
// cannot tie its plaintext to a socket; the test checks that this stays honest (no spans from
// ciphertext, the connections counted as tls_opaque).
//
//   node node_https.js server PORT CERT KEY     serve /ok 200 on 127.0.0.1:PORT
//   node node_https.js client CA URL...         GET each URL in turn, print "STATUS URL", exit
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

const [mode, ...args] = process.argv.slice(2);
if (mode === 'server') {
  serve(Number(args[0]), args[1], args[2]);
} else if (mode === 'client') {
  client(args[0], args.slice(1)).catch((e) => {
    console.error(e);
    process.exit(1);
  });
} else {
  console.error(`unknown mode ${mode}`);
  process.exit(2);
}
