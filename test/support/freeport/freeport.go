// Package freeport hands out loopback addresses for servers a test or the bench starts
// after choosing their address, often in another process (a manager's health, metrics,
// pprof and callback endpoints, a sandbox). Nothing may listen on them yet, and no two
// may be the same.
package freeport

import (
	"errors"
	"net"
	"sync"
)

var handed = struct {
	sync.Mutex
	ports map[int]bool
}{ports: map[int]bool{}}

// Addr returns a loopback address nobody listens on and that no earlier call in this
// process returned. Asking the kernel for port 0 and closing the listener is not
// enough: the kernel may hand the port it just freed out again, and a manager given
// the same port for its health probe and its metrics server exits with "address
// already in use". So every port handed out is remembered, and the listeners of the
// ports refused are held open until one is found, so the kernel cannot offer them
// again within this call.
func Addr() (string, error) {
	var held []net.Listener
	defer func() {
		for _, l := range held {
			_ = l.Close()
		}
	}()
	for range 64 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", err
		}
		held = append(held, l)
		addr := l.Addr().(*net.TCPAddr)
		handed.Lock()
		fresh := !handed.ports[addr.Port]
		handed.ports[addr.Port] = true
		handed.Unlock()
		if fresh {
			return addr.String(), nil
		}
	}
	return "", errors.New("freeport: the kernel offered only ports already handed out")
}
