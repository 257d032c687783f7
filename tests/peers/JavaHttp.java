// Java peer for the Tracewire end-to-end tests, run as a single-file source program (JDK 11+):
//
//   java JavaHttp.java server PORT              com.sun.net.httpserver on 127.0.0.1:PORT:
//                                               /ok 200, /fail 500, anything else 404
//   java JavaHttp.java client USER_AGENT URL... GET each URL in turn with java.net.http.HttpClient,
//                                               print "STATUS URL", exit
//   java JavaHttp.java proxy PORT DOWNSTREAM    a thread-per-request server: GET /x/N calls
//                                               DOWNSTREAM/N with HttpURLConnection on the handling
//                                               thread, then answers 200
//
//   java JavaHttp.java cold PORT MS             like server, but the first request takes MS ms longer
//                                               (a lazy initialisation: the cold start)
//
// The client pins HTTP/1.1: HttpClient's default (HTTP_2) would add an h2c Upgrade offer to every
// cleartext request, which is not the traffic these tests mean to produce.

import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;
import java.io.IOException;
import java.io.OutputStream;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.Arrays;
import java.util.List;

public class JavaHttp {
    public static void main(String[] args) throws Exception {
        if (args.length == 2 && args[0].equals("server")) {
            serve(Integer.parseInt(args[1]));
        } else if (args.length == 3 && args[0].equals("cold")) {
            cold(Integer.parseInt(args[1]), Long.parseLong(args[2]));
        } else if (args.length == 3 && args[0].equals("proxy")) {
            proxy(Integer.parseInt(args[1]), args[2]);
        } else if (args.length >= 3 && args[0].equals("client")) {
            System.exit(client(args[1], Arrays.asList(args).subList(2, args.length)));
        } else {
            System.err.println("usage: java JavaHttp.java server PORT | java JavaHttp.java client USER_AGENT URL...");
            System.exit(2);
        }
    }

    static void serve(int port) throws IOException {
        InetSocketAddress address = new InetSocketAddress(InetAddress.getByName("127.0.0.1"), port);
        HttpServer server = HttpServer.create(address, 0);
        server.createContext("/", JavaHttp::route);
        server.start();
        System.out.println("listening on 127.0.0.1:" + port);
    }

    static void cold(int port, long millis) throws IOException {
        InetSocketAddress address = new InetSocketAddress(InetAddress.getByName("127.0.0.1"), port);
        HttpServer server = HttpServer.create(address, 0);
        java.util.concurrent.atomic.AtomicBoolean warm = new java.util.concurrent.atomic.AtomicBoolean();
        server.createContext("/", exchange -> {
            if (!warm.getAndSet(true)) {
                try {
                    Thread.sleep(millis);
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                }
            }
            route(exchange);
        });
        server.start();
        System.out.println("listening on 127.0.0.1:" + port);
    }

    static void proxy(int port, String downstream) throws IOException {
        InetSocketAddress address = new InetSocketAddress(InetAddress.getByName("127.0.0.1"), port);
        HttpServer server = HttpServer.create(address, 64);
        server.createContext("/", exchange -> {
            exchange.getRequestBody().readAllBytes();
            String path = exchange.getRequestURI().getPath();
            String n = path.substring(path.lastIndexOf('/') + 1);
            java.net.HttpURLConnection call =
                    (java.net.HttpURLConnection) URI.create(downstream + "/" + n).toURL().openConnection();
            call.setConnectTimeout(10000);
            call.setReadTimeout(10000);
            int status = call.getResponseCode();
            try (java.io.InputStream in = status < 400 ? call.getInputStream() : call.getErrorStream()) {
                if (in != null) {
                    in.readAllBytes();
                }
            }
            byte[] bytes = ("proxied " + status + "\n").getBytes(StandardCharsets.UTF_8);
            exchange.sendResponseHeaders(200, bytes.length);
            try (OutputStream out = exchange.getResponseBody()) {
                out.write(bytes);
            }
        });
        server.setExecutor(java.util.concurrent.Executors.newCachedThreadPool());
        server.start();
        System.out.println("listening on 127.0.0.1:" + port);
    }

    static void route(HttpExchange exchange) throws IOException {
        exchange.getRequestBody().readAllBytes();
        int status;
        String body;
        switch (exchange.getRequestURI().getPath()) {
            case "/ok":
                status = 200;
                body = "ok\n";
                break;
            case "/fail":
                status = 500;
                body = "fail\n";
                break;
            default:
                status = 404;
                body = "missing\n";
        }
        byte[] bytes = body.getBytes(StandardCharsets.UTF_8);
        exchange.getResponseHeaders().set("Content-Type", "text/plain");
        exchange.sendResponseHeaders(status, bytes.length);
        try (OutputStream out = exchange.getResponseBody()) {
            out.write(bytes);
        }
    }

    static int client(String userAgent, List<String> urls) throws IOException, InterruptedException {
        HttpClient client = HttpClient.newBuilder()
                .version(HttpClient.Version.HTTP_1_1)
                .connectTimeout(Duration.ofSeconds(10))
                .build();
        for (String url : urls) {
            HttpRequest request = HttpRequest.newBuilder(URI.create(url))
                    .header("User-Agent", userAgent)
                    .timeout(Duration.ofSeconds(10))
                    .GET()
                    .build();
            HttpResponse<String> response = client.send(request, HttpResponse.BodyHandlers.ofString());
            System.out.println(response.statusCode() + " " + url);
        }
        return 0;
    }
}
