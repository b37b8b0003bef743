package chaos

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// socketOwner returns which of candidates owns the client end of the TCP connection from
// client to server (as the proxy sees it: its peer's address and its own), or 0. It reads
// Linux's /proc: the socket's inode from /proc/net/tcp, then each candidate's file
// descriptors. It tells the harness exactly which manager replica sent a token request,
// so a lost answer can be charged to the process that was killed after receiving it.
func socketOwner(client, server string, candidates []int) int {
	// The kernel prints the table as it is read, and a socket can slip between two reads
	// while others come and go (a busy machine has thousands): read it whole at once,
	// and look more than once.
	for range 8 {
		if pid := findOwner(client, server, candidates); pid != 0 {
			return pid
		}
	}
	return 0
}

func findOwner(client, server string, candidates []int) int {
	inode, err := socketInode("/proc/net/tcp", client, server)
	if err != nil || inode == "" {
		return 0
	}
	want := "socket:[" + inode + "]"
	for _, pid := range candidates {
		fds, _ := filepath.Glob(fmt.Sprintf("/proc/%d/fd/*", pid))
		for _, fd := range fds {
			if link, err := os.Readlink(fd); err == nil && link == want {
				return pid
			}
		}
	}
	return 0
}

// socketInode finds the inode of the IPv4 socket from local to remote.
func socketInode(table, local, remote string) (string, error) {
	f, err := os.Open(table)
	if err != nil {
		return "", err
	}
	defer f.Close()
	// One large read: the kernel fills it in one pass over the table, where small reads
	// leave gaps between passes for sockets to move in.
	b, err := io.ReadAll(bufio.NewReaderSize(f, 4<<20))
	if err != nil {
		return "", err
	}
	return findInode(bytes.NewReader(b), local, remote)
}

// findInode scans a /proc/net/tcp table for the open socket from local to remote. Both
// ends count: a local port is unique only with its peer (the kernel gives one ephemeral
// port to connections to different peers, of this process and of others), and a closed
// connection waiting out TIME_WAIT keeps its addresses, with no inode, for a minute.
func findInode(r io.Reader, local, remote string) (string, error) {
	l, err := procAddr(local)
	if err != nil {
		return "", err
	}
	rem, err := procAddr(remote)
	if err != nil {
		return "", err
	}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 9 && fields[1] == l && fields[2] == rem && fields[9] != "0" {
			return fields[9], nil
		}
	}
	return "", sc.Err()
}

// procAddr is an IPv4 address as /proc/net/tcp prints it: the 32-bit word in host
// (little-endian) order, then the port, in hex.
func procAddr(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", err
	}
	ip := net.ParseIP(host).To4()
	p, err := strconv.Atoi(port)
	if ip == nil || err != nil {
		return "", fmt.Errorf("not an IPv4 address: %s", addr)
	}
	return fmt.Sprintf("%02X%02X%02X%02X:%04X", ip[3], ip[2], ip[1], ip[0], p), nil
}
