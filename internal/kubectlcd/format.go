package kubectlcd

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/cli-runtime/pkg/printers"
	"sigs.k8s.io/yaml"
)

// messageWidth is how much of a condition message the table shows.
const messageWidth = 60

// none is what kubectl prints for an absent value.
const none = "<none>"

// relative says when t is from now: "in 41m", "3h5m ago".
func relative(t, now time.Time) string {
	d := t.Sub(now).Truncate(time.Second)
	switch {
	case d > 0:
		return "in " + duration.HumanDuration(d)
	case d < 0:
		return duration.HumanDuration(-d) + " ago"
	}
	return "now"
}

// relativeOrNone is relative for an optional time.
func relativeOrNone(t *metav1.Time, now time.Time) string {
	if t == nil || t.IsZero() {
		return none
	}
	return relative(t.Time, now)
}

// timestamp is an absolute time with its relative one: "2026-11-23T19:20:21Z (in 41m)".
func timestamp(t *metav1.Time, now time.Time) string {
	if t == nil || t.IsZero() {
		return none
	}
	return t.UTC().Format(time.RFC3339) + " (" + relative(t.Time, now) + ")"
}

// trim keeps a message to one line of at most width runes.
func trim(s string, width int) string {
	s = oneLine(s)
	r := []rune(s)
	if len(r) <= width {
		return s
	}
	return strings.TrimRight(string(r[:width-3]), " ") + "..."
}

// orNone is s, or <none> when empty.
func orNone(s string) string {
	if s == "" {
		return none
	}
	return s
}

// printTable writes the short view of several objects.
func printTable(w io.Writer, ss []Summary, allNamespaces bool, now time.Time) error {
	tw := printers.GetNewTabWriter(w)
	header := "NAME\tREADY\tREASON\tEXPIRES\tMESSAGE"
	if allNamespaces {
		header = "NAMESPACE\t" + header
	}
	fmt.Fprintln(tw, header)
	for _, s := range ss {
		row := fmt.Sprintf("%s\t%s\t%s\t%s\t%s", s.ref(), s.Ready, orNone(s.Reason), relativeOrNone(s.ExpiresAt, now), trim(s.Message, messageWidth))
		if allNamespaces {
			row = s.Namespace + "\t" + row
		}
		fmt.Fprintln(tw, row)
	}
	return tw.Flush()
}

// printDetail writes everything `kubectl cd status NAME` knows about one object.
func printDetail(w io.Writer, s Summary, now time.Time) error {
	tw := printers.GetNewTabWriter(w)
	field := func(name, value string) { fmt.Fprintf(tw, "%s:\t%s\n", name, value) }
	field("Name", s.Name)
	field("Namespace", s.Namespace)
	field("Kind", s.Kind)
	if s.Kind == credentialKind {
		field("Flow", s.Flow)
		field("Client ID", orNone(s.ClientID))
	} else {
		field("Credential", s.Credential)
	}
	field("Ready", s.Ready+" ("+orNone(s.Reason)+")")
	if s.Message != "" {
		field("Message", oneLine(s.Message))
	}
	if s.ObservedGeneration < s.Generation {
		field("Observed generation", fmt.Sprintf("%d (the spec is at %d: the operator has not caught up yet)", s.ObservedGeneration, s.Generation))
	}
	field("Secret", orNone(s.SecretName))
	field("Expires", timestamp(s.ExpiresAt, now))
	field("Renewal", timestamp(s.RenewalTime, now))
	if s.Kind == credentialKind {
		field("Last issued", timestamp(s.LastRenewal, now))
	} else {
		field("Last rotation", timestamp(s.LastRenewal, now))
		field("Rotations", fmt.Sprint(*s.Rotations))
		field("Subject", orNone(s.Subject))
	}
	field("Granted scopes", orNone(strings.Join(s.GrantedScopes, " ")))
	if s.ReauthorizationRequested != "" {
		field("Reauthorization requested", requestedAt(s.ReauthorizationRequested, now))
	}
	if s.AuthorizationURL != "" {
		field("Authorization URL", s.AuthorizationURL)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if err := printConditions(w, s.Conditions, now); err != nil {
		return err
	}
	return printFailure(w, s.LastFailure, now)
}

// requestedAt shows the reauthorize annotation's time, or the raw value if it is not one.
func requestedAt(v string, now time.Time) string {
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return v
	}
	return timestamp(&metav1.Time{Time: t}, now)
}

func printConditions(w io.Writer, conds []metav1.Condition, now time.Time) error {
	if len(conds) == 0 {
		_, err := fmt.Fprintln(w, "Conditions: <none>")
		return err
	}
	fmt.Fprintln(w, "Conditions:")
	tw := printers.GetNewTabWriter(w)
	fmt.Fprintln(tw, "  TYPE\tSTATUS\tREASON\tAGE\tMESSAGE")
	for _, c := range conds {
		age := none
		if !c.LastTransitionTime.IsZero() {
			age = duration.HumanDuration(now.Sub(c.LastTransitionTime.Time))
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", c.Type, c.Status, orNone(c.Reason), age, oneLine(c.Message))
	}
	return tw.Flush()
}

// printFailure shows the status fields that remember failures; times get their age.
func printFailure(w io.Writer, failure map[string]any, now time.Time) error {
	if len(failure) == 0 {
		return nil
	}
	fmt.Fprintln(w, "Last failure:")
	keys := make([]string, 0, len(failure))
	for k := range failure {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	tw := printers.GetNewTabWriter(w)
	for _, k := range keys {
		fmt.Fprintf(tw, "  %s:\t%s\n", k, failureValue(failure[k], now))
	}
	return tw.Flush()
}

func failureValue(v any, now time.Time) string {
	if s, ok := v.(string); ok {
		if t, err := time.Parse(time.RFC3339, s); err == nil {
			return timestamp(&metav1.Time{Time: t}, now)
		}
		return oneLine(s)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// printStructured writes v as JSON or YAML (-o json|yaml).
func printStructured(w io.Writer, format string, v any) error {
	switch format {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "    ")
		return enc.Encode(v)
	case "yaml":
		b, err := yaml.Marshal(v)
		if err != nil {
			return err
		}
		_, err = w.Write(b)
		return err
	}
	return fmt.Errorf("unknown output format %q", format)
}

// validateOutput checks -o before anything is read.
func validateOutput(format string) error {
	switch format {
	case "", "json", "yaml":
		return nil
	}
	return usageErrorf("unknown output format %q: use -o json or -o yaml", format)
}
