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

// config is what the flags say.
type config struct {
	listen, issuer, clientsFile, seed string
	allowRemote                       bool
	ttl, refreshTTL, sessionMax       time.Duration
	clients                           []cdsandbox.Client
	profile                           string
	offlineAccessWithoutConsent       bool
	journal                           bool
}

func main() {
	var cfg config
	flag.StringVar(&cfg.listen, "listen", "127.0.0.1:8085", "Address to listen on.")
	flag.BoolVar(&cfg.allowRemote, "allow-remote", false, "Allow a non-loopback --listen address.")
	flag.StringVar(&cfg.issuer, "issuer", "", "Issuer URL; default http://<listen>.")
	flag.StringVar(&cfg.clientsFile, "clients-file", "", "YAML list of clients (id, secret, grantTypes, redirectURIs, scopes).")
	flag.DurationVar(&cfg.ttl, "access-token-ttl", 30*time.Minute, "Access token lifetime (expires_in).")
	flag.DurationVar(&cfg.refreshTTL, "refresh-token-ttl", 0,
		"Refresh token lifetime (refresh_expires_in, enforced: a refresh token presented after it is refused) for profiles whose server limits it: keycloak's SSO Session Idle, 30m when 0; offline_access grants get 0, no limit. Other profiles send none.")
	flag.DurationVar(&cfg.sessionMax, "session-max", 0,
		"Session lifetime, counted from the login and kept across refreshes (each refresh_expires_in is at most what is left of it; a refresh after it is refused) for profiles whose server limits it: keycloak's SSO Session Max, 10h when 0; offline_access grants are not limited. Other profiles have none.")
	flag.StringVar(&cfg.seed, "seed-grant", "", "clientID:subject:path: log a customer in and write their refresh token to path (mode 0600).")
	flag.StringVar(&cfg.profile, "profile", string(cdsandbox.ProfileCD), "Identity server whose refusals (spent refresh token, unknown scope, disallowed grant type) and refresh-token rotation to imitate: "+profileNames()+".")
	flag.BoolVar(&cfg.journal, "journal", false, "Record every token request (token hashes, never tokens) and serve the records read-only at GET "+cdsandbox.JournalPath+", for test harnesses.")
	flag.BoolVar(&cfg.offlineAccessWithoutConsent, "offline-access-without-consent", false,
		"Issue a refresh token for offline_access without prompt=consent (by default the sandbox follows OpenID Connect Core §11; the google profile follows Google's access_type rule).")
	showVersion := flag.Bool("version", false, "Print the version and exit.")
	flag.Var((*clientFlags)(&cfg.clients), "client", "A client as id:secret:grantType[:redirectURI]; repeatable.")
	flag.Parse()
	if *showVersion {
		fmt.Println("cd-sandbox", version.Get())
		return
	}
	logger := log.New(os.Stdout, "cd-sandbox: ", log.LstdFlags)
	if err := run(cfg, logger); err != nil {
		logger.Fatal(err)
	}
}

func profileNames() string {
	var names []string
	for _, p := range cdsandbox.Profiles() {
		names = append(names, string(p))
	}
	return strings.Join(names, "|")
}

func run(cfg config, logger *log.Logger) error {
	host, _, err := net.SplitHostPort(cfg.listen)
	if err != nil {
		return err
	}
	if ip := net.ParseIP(host); !cfg.allowRemote && host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("--listen %s is not a loopback address; pass --allow-remote to expose the sandbox", cfg.listen)
	}
	l, err := net.Listen("tcp", cfg.listen)
	if err != nil {
		return err
	}
	if cfg.issuer == "" {
		cfg.issuer = "http://" + l.Addr().String()
	}
	s, clients, err := newServer(cfg, logger)
	if err != nil {
		l.Close()
		return err
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
	logger.Printf("serving %s as %s with %d clients; access tokens live %s", cfg.issuer, cfg.profile, clients, cfg.ttl)
	if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// newServer builds the sandbox the flags describe: clients from the flags and the
// file, the profile, and the seeded grant. It returns the number of clients too.
func newServer(cfg config, logger *log.Logger) (*cdsandbox.Server, int, error) {
	profile, err := cdsandbox.ParseProfile(cfg.profile)
	if err != nil {
		return nil, 0, fmt.Errorf("--profile: %w", err)
	}
	clients := cfg.clients
	if cfg.clientsFile != "" {
		data, err := os.ReadFile(cfg.clientsFile)
		if err != nil {
			return nil, 0, err
		}
		var fromFile []cdsandbox.Client
		if err := yaml.Unmarshal(data, &fromFile); err != nil {
			return nil, 0, fmt.Errorf("%s: %w", cfg.clientsFile, err)
		}
		clients = append(clients, fromFile...)
	}
	s := cdsandbox.New(cdsandbox.Options{
		Issuer: cfg.issuer, Clients: clients, AccessTokenTTL: cfg.ttl, RefreshTokenTTL: cfg.refreshTTL, SessionMax: cfg.sessionMax, Logger: logger,
		Profile: profile, OfflineAccessWithoutConsent: cfg.offlineAccessWithoutConsent,
	})
	if cfg.journal {
		s.EnableJournal()
	}
	if cfg.seed != "" {
		if err := seedGrant(s, cfg.seed); err != nil {
			return nil, 0, err
		}
	}
	return s, len(clients), nil
}

func seedGrant(s *cdsandbox.Server, spec string) error {
	parts := strings.SplitN(spec, ":", 3)
	if len(parts) != 3 {
		return errors.New("--seed-grant wants clientID:subject:path")
	}
	rt := s.SeedGrant(parts[0], parts[1], []string{"marketplace", "offline_access"})
	return os.WriteFile(parts[2], []byte(rt), 0o600)
}
