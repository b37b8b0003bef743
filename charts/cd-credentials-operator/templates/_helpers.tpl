{{/* Chart name, for the app.kubernetes.io/name label. */}}
{{- define "cdcreds.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the release's objects. */}}
{{- define "cdcreds.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "cdcreds.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels every object carries. */}}
{{- define "cdcreds.labels" -}}
helm.sh/chart: {{ include "cdcreds.chart" . }}
{{ include "cdcreds.selectorLabels" . }}
app.kubernetes.io/version: {{ include "cdcreds.versionLabel" . | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: cd-credentials-operator
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels that select the manager's pods. */}}
{{- define "cdcreds.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cdcreds.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: manager
{{- end }}

{{- define "cdcreds.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "cdcreds.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "cdcreds.imageTag" -}}
{{- default .Chart.AppVersion .Values.image.tag }}
{{- end }}

{{/* The image tag as a label value: an OCI tag may run to 128 characters and begin or
end with "_", "." or "-", which a label value may not (the API server would refuse
every object). Such a tag is labelled with what of it fits and a hash of the whole, so
that the label still tells it apart from every other tag ("v0.2.0." from "v0.2.0", two
long tags that differ only past the 63rd character). */}}
{{- define "cdcreds.versionLabel" -}}
{{- $tag := include "cdcreds.imageTag" . }}
{{- if and (le (len $tag) 63) (regexMatch "^([A-Za-z0-9]([A-Za-z0-9_.-]*[A-Za-z0-9])?)?$" $tag) }}
{{- $tag }}
{{- else }}
{{- printf "%s-%s" (regexReplaceAll "^[^A-Za-z0-9]+|[^A-Za-z0-9]+$" ($tag | trunc 54) "") (sha256sum $tag | trunc 8) | trimPrefix "-" }}
{{- end }}
{{- end }}

{{/* repository:tag, or repository@digest when a digest is given. */}}
{{- define "cdcreds.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (include "cdcreds.imageTag" .) }}
{{- end }}
{{- end }}

{{/* The ServiceAccount as a subject of role bindings. */}}
{{- define "cdcreds.subject" -}}
- kind: ServiceAccount
  name: {{ include "cdcreds.serviceAccountName" . }}
  namespace: {{ .Release.Namespace }}
{{- end }}

{{/* callback.url, checked: the manager serves the callback on its path, so a URL
without one would leave every login at a 404 (the manager refuses to start). */}}
{{- define "cdcreds.callbackURL" -}}
{{- $u := required "callback.url is required when the callback is enabled" .Values.callback.url }}
{{- $p := (urlParse $u).path }}
{{- if or (not $p) (eq $p "/") }}
{{- fail (printf "callback.url %q has no path: the manager serves the callback on the path of callback.url, e.g. https://cd-callback.example.com/callback" $u) }}
{{- end }}
{{- $u }}
{{- end }}

{{/* A Go duration ("25s", "1m30s", "1.5m") in seconds, as a float. The schema has
already checked its form. */}}
{{- define "cdcreds.durationSeconds" -}}
{{- $scale := dict "ns" 0.000000001 "us" 0.000001 "µs" 0.000001 "ms" 0.001 "s" 1 "m" 60 "h" 3600 }}
{{- $total := 0.0 }}
{{- range $part := regexFindAll "[0-9]+(\\.[0-9]+)?(ns|us|µs|ms|s|m|h)" . -1 }}
{{- $num := regexFind "^[0-9]+(\\.[0-9]+)?" $part }}
{{- $total = addf $total (mulf (float64 $num) (get $scale (trimPrefix $num $part))) }}
{{- end }}
{{- $total }}
{{- end }}

{{/* gracefulShutdownTimeout, checked: after it the manager spends up to 10 s more
(internal/manager's shutdownDrain) storing refresh tokens it still holds, and all of
that must end before the kubelet's SIGKILL, or a customer's new refresh token is lost. */}}
{{- define "cdcreds.gracefulShutdownTimeout" -}}
{{- $d := .Values.gracefulShutdownTimeout }}
{{- $need := addf (include "cdcreds.durationSeconds" $d) 10 }}
{{- if ge $need (float64 .Values.terminationGracePeriodSeconds) }}
{{- fail (printf "gracefulShutdownTimeout %s plus the manager's 10s drain of held refresh tokens is %vs, which must stay below terminationGracePeriodSeconds (%v): raise terminationGracePeriodSeconds or lower gracefulShutdownTimeout" $d $need .Values.terminationGracePeriodSeconds) }}
{{- end }}
{{- $d }}
{{- end }}

{{/* leaderElection's timings, checked as client-go checks them when the manager starts
(leaseDuration > renewDeadline > 1.2 × retryPeriod, its JitterFactor): a combination it
refuses would render, and every new pod would crash-loop, the old ones still running. */}}
{{- define "cdcreds.checkLeaderElection" -}}
{{- $le := .Values.leaderElection }}
{{- $lease := float64 (include "cdcreds.durationSeconds" $le.leaseDuration) }}
{{- $renew := float64 (include "cdcreds.durationSeconds" $le.renewDeadline) }}
{{- $retry := float64 (include "cdcreds.durationSeconds" $le.retryPeriod) }}
{{- if le $lease $renew }}
{{- fail (printf "leaderElection.leaseDuration %s must be longer than leaderElection.renewDeadline %s: a follower would take over while the leader still renews" $le.leaseDuration $le.renewDeadline) }}
{{- end }}
{{- if le $renew (mulf $retry 1.2) }}
{{- fail (printf "leaderElection.renewDeadline %s must be longer than 1.2 times leaderElection.retryPeriod %s (client-go's jitter): the leader would step down before its second try" $le.renewDeadline $le.retryPeriod) }}
{{- end }}
{{- end }}

{{/* Host and path of callback.url ("https://h/p" -> h, /p). */}}
{{- define "cdcreds.callbackHost" -}}
{{- (urlParse (include "cdcreds.callbackURL" .)).host | splitList ":" | first }}
{{- end }}
{{- define "cdcreds.callbackPath" -}}
{{- (urlParse (include "cdcreds.callbackURL" .)).path }}
{{- end }}

{{/* The metrics Service: a ServiceMonitor's targets get its name as their job. */}}
{{- define "cdcreds.metricsServiceName" -}}
{{- include "cdcreds.fullname" . }}-metrics
{{- end }}

{{/*
The alert rules of config/prometheus, for this release: their job matchers name the job
of config/default's metrics Service, and here name this release's (or
metrics.prometheusRule.job). The per-CR rules group by "kind, namespace, name" and name
$labels.namespace; here they use metrics.prometheusRule.namespaceLabel, the label that
holds a CR's namespace where Prometheus keeps the target's in namespace
(exported_namespace on OpenShift's user-workload monitoring).
*/}}
{{- define "cdcreds.prometheusRules" -}}
{{- $job := default (include "cdcreds.metricsServiceName" .) .Values.metrics.prometheusRule.job }}
{{- $ns := .Values.metrics.prometheusRule.namespaceLabel }}
{{- .Files.Get "files/prometheus-rules.yaml" | replace "job=\"cd-credentials-operator-metrics\"" (printf "job=%q" $job) | replace "kind, namespace, name" (printf "kind, %s, name" $ns) | replace "$labels.namespace" (printf "$labels.%s" $ns) }}
{{- end }}

{{/* Where mounted TLS Secrets live in the container. */}}
{{- define "cdcreds.callbackCertDir" -}}/etc/cd-credentials-operator/callback-tls{{- end }}
{{- define "cdcreds.metricsCertDir" -}}/etc/cd-credentials-operator/metrics-tls{{- end }}
{{- define "cdcreds.tokenHostCADir" -}}/etc/cd-credentials-operator/token-host-ca{{- end }}

{{/* The manager's flags, every one from a value. */}}
{{/*
cdcreds.number prints a number as a flag or an integer field reads it: Helm reads every
number of a values file as a float64, which a bare action prints as 2e+06 from a
million on (an integer flag refuses that, and so does the API server in an integer
field). Whole numbers print as integers, others as they are.
*/}}
{{- define "cdcreds.number" -}}
{{- if eq (float64 (int64 .)) (float64 .) }}{{ int64 . }}{{ else }}{{ . }}{{ end -}}
{{- end }}

{{- define "cdcreds.args" -}}
{{- $v := .Values -}}
{{- if $v.leaderElection.enabled }}
{{- include "cdcreds.checkLeaderElection" . }}
- --leader-elect
{{- with $v.leaderElection.id }}
- --leader-election-id={{ . }}
{{- end }}
- --leader-election-namespace={{ .Release.Namespace }}
- --leader-election-lease-duration={{ $v.leaderElection.leaseDuration }}
- --leader-election-renew-deadline={{ $v.leaderElection.renewDeadline }}
- --leader-election-retry-period={{ $v.leaderElection.retryPeriod }}
{{- end }}
- --allowed-token-hosts={{ join "," $v.allowedTokenHosts }}
{{- with $v.rbac.namespaces }}
- --watch-namespaces={{ join "," . }}
{{- end }}
{{- with $v.shardLabelSelector }}
- --shard-label-selector={{ . }}
{{- end }}
- --max-concurrent-reconciles={{ include "cdcreds.number" $v.maxConcurrentReconciles }}
- --kube-api-qps={{ include "cdcreds.number" $v.kubeAPIQPS }}
- --kube-api-burst={{ include "cdcreds.number" $v.kubeAPIBurst }}
{{- if $v.kubeAPICompression }}
- --kube-api-compression
{{- end }}
{{- with $v.pprofBindAddress }}
- --pprof-bind-address={{ . }}
{{- end }}
- --in-flight-timeout={{ $v.inFlightTimeout }}
- --token-requests-per-second={{ include "cdcreds.number" $v.tokenRequestsPerSecond }}
- --token-requests-per-namespace-per-second={{ include "cdcreds.number" $v.tokenRequestsPerNamespacePerSecond }}
- --token-request-timeout={{ $v.tokenRequestTimeout }}
{{- with $v.tokenHostCABundle.configMapName }}
- --token-host-ca-file={{ include "cdcreds.tokenHostCADir" $ }}/{{ $v.tokenHostCABundle.key }}
{{- end }}
- --graceful-shutdown-timeout={{ include "cdcreds.gracefulShutdownTimeout" . }}
- --health-probe-bind-address=:{{ $v.healthPort }}
- --key-secret={{ .Release.Namespace }}/{{ $v.keySecretName }}
{{- if $v.metrics.enabled }}
- --metrics-bind-address=:{{ $v.metrics.port }}
- --metrics-secure={{ $v.metrics.secure }}
{{- if $v.metrics.http2 }}
- --enable-http2
{{- end }}
{{- if $v.metrics.tlsSecretName }}
- --metrics-cert-dir={{ include "cdcreds.metricsCertDir" . }}
{{- end }}
{{- else }}
- --metrics-bind-address=0
{{- end }}
{{- if $v.callback.enabled }}
- --callback-bind-address=:{{ $v.callback.port }}
- --callback-url={{ include "cdcreds.callbackURL" . }}
- --authorization-link-ttl={{ $v.callback.authorizationLinkTTL }}
{{- if $v.callback.tlsSecretName }}
- --callback-cert-dir={{ include "cdcreds.callbackCertDir" . }}
{{- end }}
{{- end }}
- --zap-log-level={{ $v.logLevel }}
- --zap-encoder={{ $v.logFormat }}
{{- with $v.extraArgs }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
"true" when the CIDR .except lies strictly inside the CIDR .cidr, as the API server
requires of an ipBlock's except (it refuses the whole NetworkPolicy otherwise). Computed
for IPv4; of the IPv6 CIDRs only ::/0 is taken to hold one (an entry of another IPv6
range names its own except).
*/}}
{{- define "cdcreds.cidrHolds" -}}
{{- $c := splitList "/" .cidr }}
{{- $e := splitList "/" .except }}
{{- if and (eq (len $c) 2) (eq (len $e) 2) }}
{{- $cl := atoi (last $c) }}
{{- $el := atoi (last $e) }}
{{- if and (contains ":" .cidr) (contains ":" .except) }}
{{- if and (eq (first $c) "::") (eq $cl 0) (gt $el 0) }}true{{ end }}
{{- else if and (not (contains ":" .cidr)) (not (contains ":" .except)) (gt $el $cl) }}
{{- $size := 1 }}
{{- range until (sub 32 $cl | int) }}{{ $size = mul $size 2 }}{{ end }}
{{- if eq (div (include "cdcreds.ipv4" (first $c)) $size) (div (include "cdcreds.ipv4" (first $e)) $size) }}true{{ end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
An IPv4 address as a number.
*/}}
{{- define "cdcreds.ipv4" -}}
{{- $o := splitList "." . }}
{{- add (mul (atoi (index $o 0)) 16777216) (mul (atoi (index $o 1)) 65536) (mul (atoi (index $o 2)) 256) (atoi (index $o 3)) }}
{{- end }}
