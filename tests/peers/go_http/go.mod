module tracewire.test/go_http

go 1.19
