// gRPC peer on @grpc/grpc-js (from npm; `cargo xtask setup --test-peers` installs it and the
// tests pass its node_modules in NODE_PATH). Raw-bytes methods, no generated code: the same
// service and calls as grpc_service.py.
//
//   node grpc_node.js server PORT               serve tracewire.test.Echo until killed
//   node grpc_node.js client PORT TRACEPARENT   the test's calls over one channel, then exit
//   node grpc_node.js proxy PORT URL N          call Proxy(URL) N times in turn, print each status
//
// `Proxy` answers after GETting the URL in its request with core `http`: a gRPC server that
// calls another service while it serves.
'use strict';

const grpc = require('@grpc/grpc-js');
const http = require('http');

const SERVICE = 'tracewire.test.Echo';
const raw = { serialize: (b) => b, deserialize: (b) => b };
const definition = {
  Unary: {
    path: `/${SERVICE}/Unary`, requestStream: false, responseStream: false,
    requestSerialize: raw.serialize, requestDeserialize: raw.deserialize,
    responseSerialize: raw.serialize, responseDeserialize: raw.deserialize,
  },
  Stream: {
    path: `/${SERVICE}/Stream`, requestStream: false, responseStream: true,
    requestSerialize: raw.serialize, requestDeserialize: raw.deserialize,
    responseSerialize: raw.serialize, responseDeserialize: raw.deserialize,
  },
  Proxy: {
    path: `/${SERVICE}/Proxy`, requestStream: false, responseStream: false,
    requestSerialize: raw.serialize, requestDeserialize: raw.deserialize,
    responseSerialize: raw.serialize, responseDeserialize: raw.deserialize,
  },
};

function serve(port) {
  const server = new grpc.Server();
  server.addService(definition, {
    Unary: (call, callback) => {
      if (call.request.toString() === 'missing') {
        callback({ code: grpc.status.NOT_FOUND, details: 'no such thing' });
      } else {
        callback(null, call.request);
      }
    },
    Stream: (call) => {
      for (let i = 0; i < 3; i++) call.write(call.request);
      call.end();
    },
    Proxy: (call, callback) => {
      http.get(call.request.toString(), (res) => {
        res.resume();
        res.on('end', () => callback(null, Buffer.from(String(res.statusCode))));
      }).on('error', (e) => callback({ code: grpc.status.UNAVAILABLE, details: String(e) }));
    },
  });
  server.bindAsync(`127.0.0.1:${port}`, grpc.ServerCredentials.createInsecure(), (err) => {
    if (err) {
      console.error(err);
      process.exit(1);
    }
    console.log('ready');
  });
}

function unary(client, body, metadata) {
  return new Promise((resolve) => {
    client.Unary(Buffer.from(body), metadata || new grpc.Metadata(), { deadline: Date.now() + 10000 }, (err, reply) => {
      resolve(err ? grpc.status[err.code] : `ok ${reply.toString()}`);
    });
  });
}

async function run(port, traceparent) {
  const Client = grpc.makeGenericClientConstructor(definition, SERVICE);
  const client = new Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  const metadata = new grpc.Metadata();
  metadata.set('traceparent', traceparent);
  metadata.set('authorization', 'Bearer grpc-secret-token');
  console.log(await unary(client, 'hello', metadata));
  console.log(`missing ${await unary(client, 'missing')}`);
  const count = await new Promise((resolve, reject) => {
    let n = 0;
    const call = client.Stream(Buffer.from('s'));
    call.on('data', () => n++);
    call.on('end', () => resolve(n));
    call.on('error', reject);
  });
  console.log(`stream ${count}`);
  const all = await Promise.all(Array.from({ length: 20 }, (_, i) => unary(client, `c${i}`)));
  console.log(`concurrent ${all.filter((r) => r.startsWith('ok')).length}`);
  // Let the agent read the last frames before the connection closes.
  await new Promise((r) => setTimeout(r, 200));
  client.close();
}

async function proxy(port, url, n) {
  const Client = grpc.makeGenericClientConstructor(definition, SERVICE);
  const client = new Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  for (let i = 0; i < n; i++) {
    const status = await new Promise((resolve) => {
      client.Proxy(Buffer.from(url), (err, reply) => resolve(err ? grpc.status[err.code] : reply.toString()));
    });
    console.log(status);
  }
  await new Promise((r) => setTimeout(r, 200));
  client.close();
}

const [mode, port, traceparent, count] = process.argv.slice(2);
if (mode === 'server') {
  serve(Number(port));
} else if (mode === 'proxy') {
  proxy(Number(port), traceparent, Number(count)).catch((e) => {
    console.error(e);
    process.exit(1);
  });
} else if (mode === 'client') {
  run(Number(port), traceparent).catch((e) => {
    console.error(e);
    process.exit(1);
  });
} else {
  console.error(`unknown mode ${mode}`);
  process.exit(2);
}
