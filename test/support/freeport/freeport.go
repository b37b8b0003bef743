// Package freeport hands out loopback addresses for servers a test or the bench starts
// after choosing their address, often in another process (a manager's health, metrics,
// pprof and callback endpoints, a sandbox). Nothing may listen on them yet, and no two
// may be the same.
package freeport

import (
	"errors"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
)

var handed = struct {
	sync.Mutex
	ports map[int]bool
}{ports: map[int]bool{}}

// Addr returns a loopback address nobody listens on and that no earlier call in this
// process returned. It is taken below the kernel's ephemeral range
// (/proc/sys/net/ipv4/ip_local_port_range): a port the kernel hands out for port 0 is
// one it also gives any process's outgoing connections, and between this call and the
// server's bind another test package's client (CI runs them in parallel) took one
// ("bind: address already in use"). Below that range only a listener can take it. Every
// port handed out is remembered, so no two calls return the same one.
func Addr() (string, error) {
	low := ephemeralLow()
	for range 256 {
		port := minPort + rand.IntN(low-minPort)
		handed.Lock()
		fresh := !handed.ports[port]
		handed.Unlock()
		if !fresh {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue // a listener has it
		}
		_ = l.Close()
		handed.Lock()
		handed.ports[port] = true
		handed.Unlock()
		return l.Addr().String(), nil
	}
	return "", errors.New("freeport: no free port below the ephemeral range")
}

// minPort keeps clear of well-known and commonly configured service ports.
const minPort = 10000

// ephemeralLow is the first port of the kernel's ephemeral range, 32768 (Linux's
// default) when it cannot be read or leaves too little room below it.
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil && n > minPort+1000 {
				return n
			}
		}
	}
	return 32768
}
