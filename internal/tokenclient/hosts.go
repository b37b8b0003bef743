package tokenclient

import (
	"net"
	"net/url"
	"strings"
)

// allowList holds the hosts a client secret may be sent to: bare hosts (any port) and
// host:port pairs, lower-cased.
type allowList map[string]bool

func newAllowList(entries []string) allowList {
	a := allowList{}
	for _, e := range entries {
		e = strings.ToLower(strings.TrimSpace(e))
		if strings.Contains(e, "://") {
			// Someone pasted a URL; its host is what they meant.
			if u, err := url.Parse(e); err == nil {
				e = u.Host
			}
		}
		if h, p, err := net.SplitHostPort(e); err == nil {
			e = net.JoinHostPort(h, p)
		} else {
			e = strings.TrimSuffix(strings.TrimPrefix(e, "["), "]")
		}
		if e != "" {
			a[e] = true
		}
	}
	return a
}

// check refuses, before anything is sent, a token URL whose host is not allowed or
// whose scheme would send the secret in clear text over the network.
func (a allowList) check(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.Opaque != "" {
		return notAllowed("the token URL is not an absolute http(s) URL")
	}
	if u.User != nil {
		// net/http would turn them into a Basic header of their own.
		return notAllowed("the token URL must not carry credentials")
	}
	host := strings.ToLower(u.Hostname())
	switch {
	case u.Scheme == "http" && !isLoopback(host):
		return notAllowed("plain http is only allowed to loopback hosts; use https for " + host)
	case u.Scheme != "https" && u.Scheme != "http":
		return notAllowed("the token URL scheme " + u.Scheme + " is not https")
	case !a.allows(u.Scheme, host, u.Port()):
		return notAllowed("host " + host + " is not on the allowed token hosts")
	}
	return nil
}

func (a allowList) allows(scheme, host, port string) bool {
	if port == "" {
		port = map[string]string{"https": "443", "http": "80"}[scheme]
	}
	return a[host] || a[net.JoinHostPort(host, port)]
}

func notAllowed(why string) *Error {
	return &Error{Kind: KindHostNotAllowed, Description: scrubPatterns(why)}
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
