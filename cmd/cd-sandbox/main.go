// Command cd-sandbox runs a local stand-in for Central Dispatch's identity server (and a
// stub of its Marketplace API) for developing against Central Dispatch without an
// account. It logs every token request, never a token value.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/credops/cd-credentials-operator/internal/cdsandbox"
	"github.com/credops/cd-credentials-operator/internal/version"
)

type clientFlags []cdsandbox.Client

func (c *clientFlags) String() string { return fmt.Sprint(len(*c)) }

// Set parses id:secret:grantType[:redirectURI].
func (c *clientFlags) Set(v string) error {
	parts := strings.SplitN(v, ":", 4)
	if len(parts) < 3 {
		return errors.New("want id:secret:grantType[:redirectURI]")
	}
	cl := cdsandbox.Client{ID: parts[0], Secret: parts[1], GrantTypes: []string{parts[2]}}
	if len(parts) == 4 {
		cl.RedirectURIs = []string{parts[3]}
	}
	*c = append(*c, cl)
	return nil
}

func main() {
	listen := flag.String("listen", "127.0.0.1:8085", "Address to listen on.")
	allowRemote := flag.Bool("allow-remote", false, "Allow a non-loopback --listen address.")
	issuer := flag.String("issuer", "", "Issuer URL; default http://<listen>.")
	clientsFile := flag.String("clients-file", "", "YAML list of clients (id, secret, grantTypes, redirectURIs, scopes).")
	ttl := flag.Duration("access-token-ttl", 30*time.Minute, "Access token lifetime (expires_in).")
	seed := flag.String("seed-grant", "", "clientID:subject:path: log a customer in and write their refresh token to path (mode 0600).")
	journal := flag.Bool("journal", false, "Record every token request (token hashes, never tokens) and serve the records read-only at GET "+cdsandbox.JournalPath+", for test harnesses.")
	showVersion := flag.Bool("version", false, "Print the version and exit.")
	var clients clientFlags
	flag.Var(&clients, "client", "A client as id:secret:grantType[:redirectURI]; repeatable.")
	flag.Parse()
	if *showVersion {
		fmt.Println("cd-sandbox", version.Get())
		return
	}
	logger := log.New(os.Stdout, "cd-sandbox: ", log.LstdFlags)
	if err := run(*listen, *allowRemote, *issuer, *clientsFile, *ttl, *seed, *journal, clients, logger); err != nil {
		logger.Fatal(err)
	}
}

func run(listen string, allowRemote bool, issuer, clientsFile string, ttl time.Duration, seed string, journal bool, clients []cdsandbox.Client, logger *log.Logger) error {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return err
	}
	if ip := net.ParseIP(host); !allowRemote && host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("--listen %s is not a loopback address; pass --allow-remote to expose the sandbox", listen)
	}
	if clientsFile != "" {
		data, err := os.ReadFile(clientsFile)
		if err != nil {
			return err
		}
		var fromFile []cdsandbox.Client
		if err := yaml.Unmarshal(data, &fromFile); err != nil {
			return fmt.Errorf("%s: %w", clientsFile, err)
		}
		clients = append(clients, fromFile...)
	}
	l, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	if issuer == "" {
		issuer = "http://" + l.Addr().String()
	}
	s := cdsandbox.New(cdsandbox.Options{Issuer: issuer, Clients: clients, AccessTokenTTL: ttl, Logger: logger})
	if journal {
		s.EnableJournal()
	}
	if seed != "" {
		if err := seedGrant(s, seed); err != nil {
			return err
		}
	}
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	logger.Printf("serving %s with %d clients; access tokens live %s", issuer, len(clients), ttl)
	if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func seedGrant(s *cdsandbox.Server, spec string) error {
	parts := strings.SplitN(spec, ":", 3)
	if len(parts) != 3 {
		return errors.New("--seed-grant wants clientID:subject:path")
	}
	rt := s.SeedGrant(parts[0], parts[1], []string{"marketplace", "offline_access"})
	return os.WriteFile(parts[2], []byte(rt), 0o600)
}
