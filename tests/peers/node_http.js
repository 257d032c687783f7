// Node.js peer for the Tracewire end-to-end tests.
//
//   node node_http.js server PORT              serve /ok 200, /fail 500, anything else 404 on 127.0.0.1:PORT
//   node node_http.js client USER_AGENT URL... GET each URL in turn with http.get, print "STATUS URL", exit
//   node node_http.js proxy PORT DOWNSTREAM    GET /a/b calls DOWNSTREAM/a-b with http.get, then answers 200
//   node node_http.js fanout PORT URL...       GET /serial calls each URL one after another, GET /parallel
//                                              calls them all at once (Promise.all), then answers 200
//
// Only the core `http` module is used, so nothing needs installing besides node itself.
'use strict';

const http = require('http');

const ROUTES = {
  '/ok': [200, 'ok\n'],
  '/fail': [500, 'fail\n'],
};

function serve(port) {
  const server = http.createServer((req, res) => {
    req.resume();
    const path = req.url.split('?')[0];
    const [status, body] = ROUTES[path] || [404, 'missing\n'];
    res.writeHead(status, {
      'Content-Type': 'text/plain',
      'Content-Length': Buffer.byteLength(body),
    });
    res.end(body);
  });
  listen(server, port);
}

function proxy(port, downstream) {
  const server = http.createServer((req, res) => {
    req.resume();
    const n = req.url.split('?')[0].slice(1).replace(/\//g, '-');
    get(`${downstream}/${n}`, 'node-proxy').then(
      (status) => {
        const body = `proxied ${status}\n`;
        res.writeHead(200, { 'Content-Length': Buffer.byteLength(body) });
        res.end(body);
      },
      (err) => {
        console.error(`proxy call ${n} failed: ${err}`);
        res.writeHead(502);
        res.end(String(err));
      },
    );
  });
  listen(server, port);
}

function fanout(port, urls) {
  const server = http.createServer((req, res) => {
    req.resume();
    const path = req.url.split('?')[0];
    let calls;
    if (path === '/serial') {
      calls = (async () => {
        const statuses = [];
        for (const url of urls) {
          statuses.push(await get(url, 'node-fanout'));
        }
        return statuses;
      })();
    } else if (path === '/parallel') {
      calls = Promise.all(urls.map((url) => get(url, 'node-fanout')));
    } else {
      res.writeHead(404, { 'Content-Length': 0 });
      res.end();
      return;
    }
    calls.then(
      (statuses) => {
        const body = `${statuses.join(' ')}\n`;
        res.writeHead(200, { 'Content-Length': Buffer.byteLength(body) });
        res.end(body);
      },
      (err) => {
        console.error(`fan-out failed: ${err}`);
        res.writeHead(502);
        res.end(String(err));
      },
    );
  });
  listen(server, port);
}

// Listens on 127.0.0.1:port, says so on stdout (the harness waits for it), and closes on
// SIGINT/SIGTERM.
function listen(server, port) {
  server.listen(port, '127.0.0.1', () => {
    console.log(`listening on 127.0.0.1:${port}`);
  });
  for (const signal of ['SIGINT', 'SIGTERM']) {
    process.on(signal, () => server.close(() => process.exit(0)));
  }
}

function get(url, userAgent) {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { headers: { 'User-Agent': userAgent } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.setTimeout(10000, () => req.destroy(new Error(`timeout: ${url}`)));
  });
}

async function client(userAgent, urls) {
  for (const url of urls) {
    const status = await get(url, userAgent);
    console.log(`${status} ${url}`);
  }
}

function usage() {
  console.error('usage: node node_http.js server PORT | node node_http.js client USER_AGENT URL...');
  process.exit(2);
}

const [mode, ...rest] = process.argv.slice(2);
if (mode === 'server' && rest.length === 1) {
  serve(Number(rest[0]));
} else if (mode === 'fanout' && rest.length >= 2) {
  fanout(Number(rest[0]), rest.slice(1));
} else if (mode === 'proxy' && rest.length === 2) {
  proxy(Number(rest[0]), rest[1]);
} else if (mode === 'client' && rest.length >= 2) {
  client(rest[0], rest.slice(1)).catch((err) => {
    console.error(err);
    process.exit(1);
  });
} else {
  usage();
}
