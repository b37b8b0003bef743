package main

import (
	"context"
	"encoding/json"
	"fmt"
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
// informers, no conditions, no in-flight marks, no events.
func runBaseline() {
	cfg, err := clientcmd.BuildConfigFromFlags("", os.Getenv("BENCH_KUBECONFIG"))
	if err != nil {
		log.Fatal(err)
	}
	cfg.QPS, cfg.Burst = 500, 1000
	cs := kubernetes.NewForConfigOrDie(cfg)
	n, _ := strconv.Atoi(os.Getenv("BENCH_N"))
	var writes atomic.Int64
	for i := range n {
		go baselineGrant(cs, fmt.Sprintf("b%05d", i), os.Getenv("BENCH_TOKEN_URL"), &writes)
	}
	for range time.Tick(time.Second) {
		_ = os.WriteFile(os.Getenv("BENCH_REPORT"), []byte(strconv.FormatInt(writes.Load(), 10)), 0o600)
	}
}

func baselineGrant(cs *kubernetes.Clientset, name, tokenURL string, writes *atomic.Int64) {
	ctx := context.Background()
	secrets := cs.CoreV1().Secrets(baselineNS)
	for {
		s, err := secrets.Get(ctx, name+"-refresh", metav1.GetOptions{})
		if err != nil {
			time.Sleep(time.Second)
			continue
		}
		resp, err := http.PostForm(tokenURL, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {string(s.Data["refresh_token"])}, "client_id": {clientID}, "client_secret": {clientSecret}})
		if err != nil {
			time.Sleep(time.Second)
			continue
		}
		var tok struct {
			AccessToken  string `json:"access_token"`
			RefreshToken string `json:"refresh_token"`
			ExpiresIn    int    `json:"expires_in"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&tok)
		resp.Body.Close()
		s.Data["refresh_token"] = []byte(tok.RefreshToken)
		if _, err := secrets.Update(ctx, s, metav1.UpdateOptions{}); err == nil {
			writes.Add(1)
		}
		out := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name + "-token", Namespace: baselineNS}, Data: map[string][]byte{"access_token": []byte(tok.AccessToken)}}
		if _, err := secrets.Update(ctx, out, metav1.UpdateOptions{}); apierrors.IsNotFound(err) {
			_, err = secrets.Create(ctx, out, metav1.CreateOptions{})
			writes.Add(1)
		} else if err == nil {
			writes.Add(1)
		}
		time.Sleep(time.Duration(tok.ExpiresIn) * time.Second * 2 / 3)
	}
}
