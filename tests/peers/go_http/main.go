// Go peer for the Tracewire end-to-end tests (standard library only):
//
//	go_http server PORT              net/http on 127.0.0.1:PORT: /ok 200, /fail 500, anything else 404
//	go_http client USER_AGENT URL... GET each URL in turn with net/http, print "STATUS URL", exit
//
// The tests build it with CGO_ENABLED=0: a static Go binary makes its syscalls directly, never
// through libc, which is the case a syscall-level agent has to get right for Go services.
package main

import (
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"time"
)

func main() {
	switch {
	case len(os.Args) == 3 && os.Args[1] == "server":
		serve(os.Args[2])
	case len(os.Args) >= 4 && os.Args[1] == "client":
		if err := client(os.Args[2], os.Args[3:]); err != nil {
			log.Fatal(err)
		}
	default:
		fmt.Fprintln(os.Stderr, "usage: go_http server PORT | go_http client USER_AGENT URL...")
		os.Exit(2)
	}
}

func serve(port string) {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
			reply(w, http.StatusOK, "ok\n")
		case "/fail":
			reply(w, http.StatusInternalServerError, "fail\n")
		default:
			reply(w, http.StatusNotFound, "missing\n")
		}
	})
	server := &http.Server{Addr: "127.0.0.1:" + port, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	fmt.Printf("listening on 127.0.0.1:%s\n", port)
	log.Fatal(server.ListenAndServe())
}

func reply(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "text/plain")
	w.WriteHeader(status)
	io.WriteString(w, body)
}

func client(userAgent string, urls []string) error {
	httpClient := &http.Client{Timeout: 10 * time.Second}
	for _, url := range urls {
		request, err := http.NewRequest(http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		request.Header.Set("User-Agent", userAgent)
		response, err := httpClient.Do(request)
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, response.Body)
		response.Body.Close()
		if err != nil {
			return err
		}
		fmt.Printf("%d %s\n", response.StatusCode, url)
	}
	return nil
}
