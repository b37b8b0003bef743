package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

const baselineNS = "baseline"

// runBaseline is the baseline: for each grant, forever: read its refresh token, refresh
// it, store the new one, write the access token Secret, sleep 2/3 of the lifetime. No
// informers, no conditions, no in-flight marks, no events. Like the manager it runs a
// bounded number of refreshes at once over a keep-alive connection pool, so the two
// differ in what they do per rotation, not in how they reach the token host.
func runBaseline() {
	cfg, err := clientcmd.BuildConfigFromFlags("", os.Getenv("BENCH_KUBECONFIG"))
	if err != nil {
		log.Fatal(err)
	}
	cfg.QPS, cfg.Burst = 500, 1000
	cs := kubernetes.NewForConfigOrDie(cfg)
	n, _ := strconv.Atoi(os.Getenv("BENCH_N"))
	workers := envInt("BENCH_LOOP_WORKERS", 16)
	loop := &loop{cs: cs, tokenURL: os.Getenv("BENCH_TOKEN_URL"), slots: make(chan struct{}, workers), http: &http.Client{Transport: pooledTransport(workers)}}
	for i := range n {
		go loop.grant(fmt.Sprintf("b%05d", i))
	}
	for range time.Tick(time.Second) {
		_ = os.WriteFile(os.Getenv("BENCH_REPORT"), []byte(strconv.FormatInt(loop.writes.Load(), 10)), 0o600)
	}
}

type loop struct {
	cs       kubernetes.Interface
	tokenURL string
	slots    chan struct{}
	http     *http.Client
	writes   atomic.Int64
}

func pooledTransport(conns int) http.RoundTripper {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = conns
	return t
}

func (l *loop) grant(name string) {
	for {
		l.slots <- struct{}{}
		lifetime, ok := l.rotate(name)
		<-l.slots
		if !ok {
			time.Sleep(time.Second)
			continue
		}
		time.Sleep(lifetime * 2 / 3)
	}
}

// rotate reads, refreshes and stores one grant's tokens and returns the new token's
// lifetime.
func (l *loop) rotate(name string) (time.Duration, bool) {
	ctx := context.Background()
	s, err := l.cs.CoreV1().Secrets(baselineNS).Get(ctx, name+"-refresh", metav1.GetOptions{})
	if err != nil {
		return 0, false
	}
	tok, ok := l.refresh(s)
	if !ok {
		return 0, false
	}
	l.store(ctx, name, s, tok)
	return time.Duration(tok.ExpiresIn) * time.Second, true
}

// loopToken is the part of a token answer the loop keeps.
type loopToken struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
	ExpiresIn    int    `json:"expires_in"`
}

// refresh spends the refresh token in s; ok is false for anything but an issued token.
func (l *loop) refresh(s *corev1.Secret) (tok loopToken, ok bool) {
	resp, err := l.http.PostForm(l.tokenURL, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {string(s.Data["refresh_token"])}, "client_id": {clientID}, "client_secret": {clientSecret}})
	if err != nil {
		return tok, false
	}
	err = json.NewDecoder(resp.Body).Decode(&tok)
	_, _ = io.Copy(io.Discard, resp.Body) // to the end, so the connection is reused
	resp.Body.Close()
	// Nothing to store from a refusal: it must not overwrite the refresh token.
	return tok, resp.StatusCode == http.StatusOK && err == nil && tok.RefreshToken != ""
}

// store writes the new refresh token into s and the access token into the grant's token
// Secret.
func (l *loop) store(ctx context.Context, name string, s *corev1.Secret, tok loopToken) {
	secrets := l.cs.CoreV1().Secrets(baselineNS)
	s.Data["refresh_token"] = []byte(tok.RefreshToken)
	if _, err := secrets.Update(ctx, s, metav1.UpdateOptions{}); err == nil {
		l.writes.Add(1)
	}
	out := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name + "-token", Namespace: baselineNS}, Data: map[string][]byte{"access_token": []byte(tok.AccessToken)}}
	if _, err := secrets.Update(ctx, out, metav1.UpdateOptions{}); apierrors.IsNotFound(err) {
		if _, err := secrets.Create(ctx, out, metav1.CreateOptions{}); err == nil {
			l.writes.Add(1)
		}
	} else if err == nil {
		l.writes.Add(1)
	}
}
