#!/bin/sh
# /init of the initramfs that `cargo xtask kernels` boots under qemu: runs `tracewire check`,
# then traces busybox httpd serving busybox wget over loopback, once with the syscalls hooked
# as the agent chooses (fexit where allowed) and once by tracepoints with injection, prints
# everything between markers on the serial console, and powers off. The host side parses
# the markers.
export PATH=/bin NO_COLOR=1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tracefs tracefs /sys/kernel/tracing || echo "TW-NOTE tracefs mount failed"
mount -t bpf bpf /sys/fs/bpf 2>/dev/null
mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null
ip link set lo up 2>/dev/null || ifconfig lo 127.0.0.1 up
echo "TW-KERNEL $(uname -r)"

/tracewire check >/check.txt 2>&1
rc=$?
echo "==TW-CHECK-BEGIN=="
cat /check.txt
echo "==TW-CHECK-END== rc=$rc"

httpd -f -p 127.0.0.1:8080 -h /www &
httpd=$!
# The server must be listening before the agent starts (these requests are not traced): under
# TCG with one vCPU a busy guest can leave it unscheduled for a long time.
i=0
while [ $i -lt 40 ]; do
    wget -q -O /dev/null http://127.0.0.1:8080/ok.html 2>/dev/null && break
    sleep 0.25
    i=$((i + 1))
done
echo "TW-HTTPD listening after $i polls"
# start_agent OUT ARGS...: the agent, its spans into OUT, its log (and any verifier log)
# straight to the console; waits until it is ready.
start_agent() {
    out=$1
    shift
    /tracewire run --metrics-addr 127.0.0.1:9464 "$@" >"$out" &
    agent=$!
    i=0
    while [ $i -lt 60 ]; do
        if wget -q -O /dev/null http://127.0.0.1:9464/ready 2>/dev/null; then
            echo "TW-READY after $i polls"
            break
        fi
        if ! kill -0 $agent 2>/dev/null; then
            echo "TW-NOTE agent exited before it was ready"
            break
        fi
        sleep 0.5
        i=$((i + 1))
    done
}

stop_agent() {
    sleep 2
    kill -INT $agent 2>/dev/null
    # A watchdog, in case the agent does not stop on SIGINT.
    (sleep 10; kill -KILL $agent 2>/dev/null && echo "TW-NOTE agent ignored SIGINT for 10 s") &
    wait $agent
    echo "TW-AGENT-EXIT rc=$?"
}

# A TLS server for the OpenSSL uprobes: s_server -www answers a GET with a status page.
openssl s_server -accept 127.0.0.1:8443 -cert /tls/cert.pem -key /tls/key.pem -www -quiet \
    >/dev/null 2>&1 &

# Syscalls hooked as the agent chooses by itself: fexit where the kernel allows it (the host
# side knows which kernels must), tracepoints otherwise.
start_agent /spans-auto.txt --port 8080 --port 8443 --syscall-hooks auto
wget -q -O - http://127.0.0.1:9464/metrics 2>/dev/null | grep '^tracewire_syscall_hooks' | sed 's/^/TW-HOOKS /'
wget -q -O /dev/null http://127.0.0.1:8080/ok.html
wget -q -O /dev/null http://127.0.0.1:8080/missing.html 2>/dev/null
printf 'GET / HTTP/1.0\r\n\r\n' | openssl s_client -connect 127.0.0.1:8443 -quiet 2>/dev/null \
    | head -1 | sed 's/^/TW-TLS-REPLY /'
stop_agent
echo "==TW-AUTO-SPANS-BEGIN=="
cat /spans-auto.txt
echo "==TW-AUTO-SPANS-END=="

# Then tracepoints, with trace-context injection scoped to this cgroup: a client in it gets a
# traceparent, one outside does not.
mkdir -p /sys/fs/cgroup/tw
start_agent /spans.txt --port 8080 --port 8081 --inject-cgroup /sys/fs/cgroup/tw

kill -0 $httpd 2>/dev/null || echo "TW-NOTE httpd exited while the agent started"
wget -q -O - http://127.0.0.1:8080/ok.html
wget -q -O - http://127.0.0.1:8080/missing.html 2>/dev/null || echo "TW-NOTE 404 as expected"
# nc answers with an empty 200 and records the raw request it got.
reply='HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n'
printf "$reply" | nc -l -p 8081 >/req-in.txt &
sleep 0.3
sh -c 'echo $$ >/sys/fs/cgroup/tw/cgroup.procs && exec wget -q -O /dev/null http://127.0.0.1:8081/in'
printf "$reply" | nc -l -p 8081 >/req-out.txt &
sleep 0.3
wget -q -O /dev/null http://127.0.0.1:8081/out
echo "==TW-INJECT-BEGIN=="
echo "IN"
cat /req-in.txt
echo "OUT"
cat /req-out.txt
echo "==TW-INJECT-END=="
stop_agent
echo "==TW-SPANS-BEGIN=="
cat /spans.txt
echo "==TW-SPANS-END=="
# With acpi=off there is no ACPI power-off: reboot, which qemu -no-reboot turns into an exit.
reboot -f
