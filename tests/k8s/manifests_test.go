// SPDX-License-Identifier: Apache-2.0

// The Kubernetes manifests in deploy/k8s, rendered by kustomize (krusty) and
// decoded strictly into the k8s.io/api types, checked against the services'
// configurations (the ConfigMaps' text, which is deploy/*.cfg, plus the
// containers' --set flags) and against each other. EM_BUILD_DIR names the
// build whose binaries run --check-config on every ConfigMap.
package k8s

import (
	"context"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

const (
	repoRoot = "../.."
	k8sRoot  = repoRoot + "/deploy/k8s"
	// After drain.timeout_ms a service still commits, flushes its producer
	// (at least 1 s) and closes its Kafka clients: the grace period must
	// leave at least this much beyond preStop + drain.
	drainMarginMs = 5000
	// The executor's own memory beside its exec handlers' children.
	executorBaseMiB = 256
)

// The services' defaults (docs/configuration.md) for what the files may omit.
var defaults = map[string]struct{ grpc, metrics string }{
	"scheduler": {"127.0.0.1:7100", "127.0.0.1:9100"},
	"executor":  {"127.0.0.1:7200", "127.0.0.1:9200"},
	"sink":      {"127.0.0.1:7300", "127.0.0.1:9300"},
}

// workload is a StatefulSet or Deployment running one execmesh service.
type workload struct {
	kind, name, ns string
	replicas       *int32
	selector       *metav1.LabelSelector
	tmpl           *corev1.PodTemplateSpec
	role           string // scheduler, executor, sink
	c              *corev1.Container
	cfgName        string // the file's name in the ConfigMap (scheduler.cfg)
	cfgText        string
	sets           []string // the --set KEY=VALUE flags, in order
	cfg            Config   // the file with the --set flags applied
	grpcPort       int32
	metricsPort    int32
	serviceName    string // a StatefulSet's governing Service
}

func (w *workload) String() string { return w.kind + "/" + w.name }

type rendered struct {
	dir        string
	objs       []Object
	namespaces map[string]*corev1.Namespace
	configMaps map[string]*corev1.ConfigMap // by namespace/name
	services   []*corev1.Service
	pdbs       []*policyv1.PodDisruptionBudget
	netpols    []*networkingv1.NetworkPolicy
	hpas       []*autoscalingv2.HorizontalPodAutoscaler
	deploys    map[string]*appsv1.Deployment // by namespace/name
	workloads  []*workload
}

// kustomizations: the base and every overlay.
func kustomizations(t *testing.T) []string {
	dirs := []string{k8sRoot + "/base"}
	overlays, _ := filepath.Glob(k8sRoot + "/overlays/*/kustomization.yaml")
	for _, o := range overlays {
		dirs = append(dirs, filepath.Dir(o))
	}
	if len(overlays) == 0 {
		t.Errorf("no overlays under %s/overlays", k8sRoot)
	}
	return dirs
}

func TestManifests(t *testing.T) {
	for _, dir := range kustomizations(t) {
		name, _ := filepath.Rel(k8sRoot, dir)
		t.Run(name, func(t *testing.T) {
			r := load(t, dir)
			t.Run("namespace", r.checkNamespace)
			t.Run("workloads", r.checkWorkloads)
			t.Run("probes", r.checkProbes)
			t.Run("tls", r.checkTLS)
			t.Run("drain", r.checkDrain)
			t.Run("replica_identity", r.checkIdentity)
			t.Run("resources", r.checkResources)
			t.Run("services", r.checkServices)
			t.Run("targets", r.checkTargets)
			t.Run("pdbs", r.checkPDBs)
			t.Run("network_policies", r.checkNetworkPolicies)
			t.Run("hpa", r.checkHPA)
			t.Run("configs_are_deploy_cfg", r.checkConfigsAreDeployFiles)
			t.Run("check_config", r.checkConfigsWithBinaries)
		})
	}
}

// A field the API types do not know is refused, not dropped.
func TestStrictDecodeRefusesUnknownFields(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("kustomization.yaml", "resources: [svc.yaml]\n")
	write("svc.yaml", "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {selectr: {a: b}, ports: [{port: 1}]}\n")
	if _, err := Render(dir); err == nil || !strings.Contains(err.Error(), "selectr") {
		t.Fatalf("unknown field spec.selectr: got %v, want an error naming it", err)
	}
	write("svc.yaml", "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {selector: {a: b}, ports: [{port: 1}]}\n")
	if _, err := Render(dir); err != nil {
		t.Fatalf("a valid Service: %v", err)
	}
}

func load(t *testing.T, dir string) *rendered {
	t.Helper()
	objs, err := Render(dir)
	if err != nil {
		t.Fatal(err)
	}
	r := &rendered{dir: dir, objs: objs, namespaces: map[string]*corev1.Namespace{}, configMaps: map[string]*corev1.ConfigMap{},
		deploys: map[string]*appsv1.Deployment{}}
	for _, o := range objs { // the ConfigMaps first: the workloads read them
		if x, ok := o.Typed.(*corev1.ConfigMap); ok {
			r.configMaps[x.Namespace+"/"+x.Name] = x
		}
	}
	for _, o := range objs {
		switch x := o.Typed.(type) {
		case *corev1.Namespace:
			r.namespaces[x.Name] = x
		case *corev1.Service:
			r.services = append(r.services, x)
		case *policyv1.PodDisruptionBudget:
			r.pdbs = append(r.pdbs, x)
		case *networkingv1.NetworkPolicy:
			r.netpols = append(r.netpols, x)
		case *autoscalingv2.HorizontalPodAutoscaler:
			r.hpas = append(r.hpas, x)
		case *appsv1.StatefulSet:
			w := r.workload(t, "StatefulSet", x.Name, x.Namespace, x.Spec.Replicas, x.Spec.Selector, &x.Spec.Template)
			w.serviceName = x.Spec.ServiceName
			r.workloads = append(r.workloads, w)
		case *appsv1.Deployment:
			r.deploys[x.Namespace+"/"+x.Name] = x
			r.workloads = append(r.workloads, r.workload(t, "Deployment", x.Name, x.Namespace, x.Spec.Replicas, x.Spec.Selector, &x.Spec.Template))
		}
	}
	return r
}

// workload finds the execmesh container, its config file (through the
// --config flag, the volume mount and the ConfigMap) and its ports.
func (r *rendered) workload(t *testing.T, kind, name, ns string, replicas *int32, sel *metav1.LabelSelector, tmpl *corev1.PodTemplateSpec) *workload {
	t.Helper()
	w := &workload{kind: kind, name: name, ns: ns, replicas: replicas, selector: sel, tmpl: tmpl}
	for i := range tmpl.Spec.Containers {
		c := &tmpl.Spec.Containers[i]
		if len(c.Command) == 0 {
			continue
		}
		if role, ok := strings.CutPrefix(filepath.Base(c.Command[0]), "execmesh-"); ok {
			if w.c != nil {
				t.Fatalf("%s: more than one execmesh container", w)
			}
			w.c, w.role = c, role
		}
	}
	if w.c == nil {
		t.Fatalf("%s: no container whose command is /…/execmesh-<service>", w)
	}
	if _, ok := defaults[w.role]; !ok {
		t.Fatalf("%s: unknown service %q", w, w.role)
	}
	cfgPath := ""
	args := w.c.Args
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case (a == "--config" || a == "-c") && i+1 < len(args):
			cfgPath = args[i+1]
			i++
		case strings.HasPrefix(a, "--config="):
			cfgPath = strings.TrimPrefix(a, "--config=")
		case (a == "--set" || a == "-s") && i+1 < len(args):
			w.sets = append(w.sets, args[i+1])
			i++
		case strings.HasPrefix(a, "--set="):
			w.sets = append(w.sets, strings.TrimPrefix(a, "--set="))
		}
	}
	if cfgPath == "" {
		t.Fatalf("%s: no --config FILE in the container's args", w)
	}
	w.cfgName, w.cfgText = r.mountedFile(t, w, cfgPath)
	cfg, err := ParseLibconfig(w.cfgText)
	if err != nil {
		t.Fatalf("%s: %s: %v", w, cfgPath, err)
	}
	for _, s := range w.sets {
		if err := cfg.Set(s); err != nil {
			t.Fatalf("%s: %v", w, err)
		}
	}
	w.cfg = cfg
	w.grpcPort = listenPort(t, w, "grpc.listen", defaults[w.role].grpc)
	w.metricsPort = listenPort(t, w, "metrics.listen", defaults[w.role].metrics)
	return w
}

// mountFor returns the container's volume mount that holds path, the
// deepest one (a Secret may be mounted inside a ConfigMap's directory, as
// /etc/execmesh/tls inside /etc/execmesh), its volume (nil when no volume has
// its name) and path relative to the mount (a subPath mount: its subPath).
func (w *workload) mountFor(path string) (*corev1.VolumeMount, *corev1.Volume, string) {
	var best *corev1.VolumeMount
	rel, depth := "", -1
	for i := range w.c.VolumeMounts {
		m := &w.c.VolumeMounts[i]
		mp := strings.TrimSuffix(m.MountPath, "/")
		r := ""
		switch {
		case m.SubPath != "" && path == m.MountPath:
			r = m.SubPath
		case m.SubPath == "" && strings.HasPrefix(path, mp+"/"):
			r = strings.TrimPrefix(path, mp+"/")
		default:
			continue
		}
		if len(mp) > depth {
			best, rel, depth = m, r, len(mp)
		}
	}
	if best == nil {
		return nil, nil, ""
	}
	return best, w.volume(best.Name), rel
}

func (w *workload) volume(name string) *corev1.Volume {
	for i := range w.tmpl.Spec.Volumes {
		if w.tmpl.Spec.Volumes[i].Name == name {
			return &w.tmpl.Spec.Volumes[i]
		}
	}
	return nil
}

// mountedFile returns the name and the text of the ConfigMap key mounted at path.
func (r *rendered) mountedFile(t *testing.T, w *workload, path string) (string, string) {
	t.Helper()
	m, v, rel := w.mountFor(path)
	switch {
	case m == nil:
		t.Fatalf("%s: --config %s is on no volume mount", w, path)
	case v == nil:
		t.Fatalf("%s: volume mount %s names no volume", w, m.Name)
	case v.ConfigMap == nil:
		t.Fatalf("%s: %s is mounted from volume %s, which is not a ConfigMap", w, path, v.Name)
	}
	key := rel
	if len(v.ConfigMap.Items) > 0 {
		key = ""
		for _, it := range v.ConfigMap.Items {
			if it.Path == rel {
				key = it.Key
			}
		}
	}
	cm := r.configMaps[w.ns+"/"+v.ConfigMap.Name]
	if cm == nil {
		t.Fatalf("%s: volume %s names ConfigMap %s, not in the render", w, v.Name, v.ConfigMap.Name)
	}
	text, ok := cm.Data[key]
	if !ok {
		t.Fatalf("%s: ConfigMap %s has no key %q for %s", w, cm.Name, key, path)
	}
	return filepath.Base(path), text
}

func listenPort(t *testing.T, w *workload, key, def string) int32 {
	t.Helper()
	v, err := w.cfg.Str(key, def)
	if err != nil {
		t.Fatalf("%s: %v", w, err)
	}
	host, p, err := net.SplitHostPort(v)
	if err != nil {
		t.Fatalf("%s: %s = %q: %v", w, key, v, err)
	}
	n, err := strconv.Atoi(p)
	if err != nil || n <= 0 || n > 65535 {
		t.Fatalf("%s: %s = %q: a fixed port is needed in a pod", w, key, v)
	}
	if host == "127.0.0.1" || host == "localhost" {
		t.Errorf("%s: %s = %q listens on loopback only: probes and peers cannot reach it", w, key, v)
	}
	return int32(n)
}

// containerPort resolves a port given by number or by name on w's container.
func (w *workload) containerPort(p intstr.IntOrString) (int32, bool) {
	if p.Type == intstr.Int {
		for _, cp := range w.c.Ports {
			if cp.ContainerPort == p.IntVal {
				return p.IntVal, true
			}
		}
		return p.IntVal, false
	}
	for _, cp := range w.c.Ports {
		if cp.Name == p.StrVal {
			return cp.ContainerPort, true
		}
	}
	return 0, false
}

func (w *workload) podLabels() labels.Set { return labels.Set(w.tmpl.Labels) }

func (r *rendered) byRole(role string) []*workload {
	var out []*workload
	for _, w := range r.workloads {
		if w.role == role {
			out = append(out, w)
		}
	}
	return out
}

// selected returns the workloads in ns whose pods sel selects.
func (r *rendered) selected(ns string, sel labels.Selector) []*workload {
	var out []*workload
	for _, w := range r.workloads {
		if w.ns == ns && sel.Matches(w.podLabels()) {
			out = append(out, w)
		}
	}
	return out
}

func (r *rendered) checkNamespace(t *testing.T) {
	// every object in the one namespace the render creates (an overlay's own
	// resources get none from the base's `namespace:`)
	if len(r.namespaces) != 1 {
		t.Errorf("%d Namespaces in the render, want 1", len(r.namespaces))
	}
	for _, o := range r.objs {
		if o.Kind != "Namespace" && (o.Namespace == "" || r.namespaces[o.Namespace] == nil) {
			t.Errorf("%s %s: namespace %q is not the render's", o.Kind, o.Name, o.Namespace)
		}
	}
}

func (r *rendered) checkWorkloads(t *testing.T) {
	for _, role := range []string{"scheduler", "executor", "sink"} {
		if n := len(r.byRole(role)); n != 1 {
			t.Errorf("%d workloads run the %s, want 1", n, role)
		}
	}
	for _, w := range r.workloads {
		sel, err := metav1.LabelSelectorAsSelector(w.selector)
		if err != nil || sel.Empty() {
			t.Errorf("%s: selector %v: %v (empty selectors select everything)", w, w.selector, err)
			continue
		}
		if !sel.Matches(w.podLabels()) {
			t.Errorf("%s: selector %s does not match its pod labels %v", w, sel, w.tmpl.Labels)
		}
		// no two workloads may select each other's pods
		for _, o := range r.workloads {
			if o != w && o.ns == w.ns && sel.Matches(o.podLabels()) {
				t.Errorf("%s: selector %s also matches the pods of %s", w, sel, o)
			}
		}
		if w.role == "scheduler" && w.kind != "StatefulSet" {
			t.Errorf("%s: schedulers need stable pod names for kafka.instance_id: a StatefulSet", w)
		}
		for _, want := range []struct {
			name string
			port int32
		}{{"grpc", w.grpcPort}, {"metrics", w.metricsPort}} {
			if p, ok := w.containerPort(intstr.FromString(want.name)); !ok || p != want.port {
				t.Errorf("%s: container port %q = %d (found %v), the config listens on %d", w, want.name, p, ok, want.port)
			}
		}
	}
}

// healthProbe is grpc-health-probe in the image (deploy/Containerfile).
const healthProbe = "/usr/local/bin/grpc-health-probe"

// probeFlags reads grpc-health-probe's arguments as Go's flag package does:
// -name=value, --name=value or -name value; its boolean flags take no value.
func probeFlags(args []string) (map[string]string, error) {
	bools := map[string]bool{"tls": true, "tls-no-verify": true, "alts": true, "spiffe": true, "gzip": true, "v": true, "version": true}
	out := map[string]string{}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") || a == "-" || a == "--" {
			return nil, fmt.Errorf("argument %q: not a flag (grpc-health-probe takes flags only)", a)
		}
		name, val, hasVal := strings.Cut(strings.TrimPrefix(a[1:], "-"), "=")
		if _, dup := out[name]; dup && name != "rpc-header" {
			return nil, fmt.Errorf("-%s given twice", name)
		}
		switch {
		case hasVal:
		case bools[name]:
			val = "true"
		case i+1 < len(args):
			i++
			val = args[i]
		default:
			return nil, fmt.Errorf("-%s needs a value", name)
		}
		out[name] = val
	}
	return out, nil
}

// serverNames: the names w's certificate must carry for its callers, which
// its readiness probe should verify too: the host of every dns:/// target
// that names w's Service (executors.target, sinks.target), else, for the
// schedulers, the ClusterIP Services onto their gRPC port (Submit clients).
func (r *rendered) serverNames(w *workload) []string {
	var names []string
	for _, link := range links {
		if link.to != w.role {
			continue
		}
		for _, from := range r.byRole(link.from) {
			target, _ := from.cfg.Str(link.key, "")
			if host, _, err := net.SplitHostPort(strings.TrimPrefix(target, "dns:///")); err == nil && !slices.Contains(names, host) {
				names = append(names, host)
			}
		}
	}
	if len(names) > 0 {
		return names
	}
	for _, s := range r.services {
		if s.Spec.ClusterIP == corev1.ClusterIPNone || !slices.Contains(r.serviceWorkloads(s), w) {
			continue
		}
		for _, p := range s.Spec.Ports {
			if cp, ok := servicePort(s, w, p.Port); ok && cp == w.grpcPort {
				names = append(names, s.Name+"."+s.Namespace+".svc", s.Name+"."+s.Namespace+".svc.cluster.local")
			}
		}
	}
	return names
}

// checkReadiness: an exec probe running the image's grpc-health-probe over
// mutual TLS on the pod's loopback, with the pod's own certificate (the files
// the config's tls.* name, from the Secret), verifying the name its callers
// check. The kubelet's native gRPC probe cannot present a client certificate.
func (r *rendered) checkReadiness(t *testing.T, w *workload) {
	rp := w.c.ReadinessProbe
	if rp == nil || rp.Exec == nil || rp.GRPC != nil || rp.HTTPGet != nil || rp.TCPSocket != nil {
		t.Errorf("%s: readiness must be an exec probe running %s with its TLS flags (the kubelet's gRPC probe cannot present a client certificate)", w, healthProbe)
		return
	}
	cmd := rp.Exec.Command
	if len(cmd) == 0 || cmd[0] != healthProbe {
		t.Errorf("%s: readiness runs %q, want %s (the image's)", w, cmd, healthProbe)
		return
	}
	f, err := probeFlags(cmd[1:])
	if err != nil {
		t.Errorf("%s: readiness %q: %v", w, cmd, err)
		return
	}
	host, port, _ := net.SplitHostPort(f["addr"])
	if port != strconv.Itoa(int(w.grpcPort)) || host != "127.0.0.1" && host != "localhost" && host != "::1" {
		t.Errorf("%s: readiness -addr=%q; want 127.0.0.1:%d (the gRPC port, from inside the pod)", w, f["addr"], w.grpcPort)
	}
	if f["service"] != "" {
		t.Errorf("%s: readiness asks service %q; \"\" is the overall health", w, f["service"])
	}
	for _, insecure := range []string{"tls-no-verify", "alts", "spiffe"} {
		if v, ok := f[insecure]; ok && v != "false" {
			t.Errorf("%s: readiness -%s: the probe must verify the server's certificate against the mesh's CA", w, insecure)
		}
	}
	if f["tls"] != "true" {
		t.Errorf("%s: readiness without -tls: the gRPC port serves mutual TLS only", w)
	}
	for flag, key := range map[string]string{"tls-ca-cert": "tls.ca_file", "tls-client-cert": "tls.cert_file", "tls-client-key": "tls.key_file"} {
		want, _ := w.cfg.Str(key, "")
		if f[flag] == "" || f[flag] != want {
			t.Errorf("%s: readiness -%s=%q; the config's %s is %q (the probe presents the pod's own certificate and trusts its CA)", w, flag, f[flag], key, want)
		}
	}
	if names := r.serverNames(w); !slices.Contains(names, f["tls-server-name"]) {
		t.Errorf("%s: readiness -tls-server-name=%q; want one of %q, the name its callers verify (so a certificate without it fails readiness too)", w, f["tls-server-name"], names)
	}
	// its own timeouts (default 1 s each) must end it before the kubelet's
	total := time.Duration(0)
	for _, flag := range []string{"connect-timeout", "rpc-timeout"} {
		d := time.Second
		if v, ok := f[flag]; ok {
			if d, err = time.ParseDuration(v); err != nil {
				t.Errorf("%s: readiness -%s=%q: %v", w, flag, v, err)
			}
		}
		total += d
	}
	if limit := time.Duration(max(rp.TimeoutSeconds, 1)) * time.Second; total >= limit {
		t.Errorf("%s: readiness -connect-timeout + -rpc-timeout = %s, not under timeoutSeconds (%s): the kubelet would kill the probe first", w, total, limit)
	}
}

func (r *rendered) checkProbes(t *testing.T) {
	for _, w := range r.workloads {
		r.checkReadiness(t, w)
		lp := w.c.LivenessProbe
		switch {
		case lp == nil || lp.HTTPGet == nil || lp.GRPC != nil || lp.Exec != nil || lp.TCPSocket != nil:
			t.Errorf("%s: liveness must be an HTTP GET of /livez on the metrics port (gRPC health is NOT_SERVING in a broker outage)", w)
		case lp.HTTPGet.Path != "/livez":
			t.Errorf("%s: liveness GET %q: /livez is the loops' heartbeat (lib/em_service.c)", w, lp.HTTPGet.Path)
		default:
			if p, ok := w.containerPort(lp.HTTPGet.Port); !ok || p != w.metricsPort {
				t.Errorf("%s: liveness port %s is %d, the metrics port is %d", w, lp.HTTPGet.Port.String(), p, w.metricsPort)
			}
			if lp.HTTPGet.Scheme != "" && lp.HTTPGet.Scheme != corev1.URISchemeHTTP {
				t.Errorf("%s: liveness scheme %s: the metrics port is plain HTTP", w, lp.HTTPGet.Scheme)
			}
		}
		if sp := w.c.StartupProbe; sp != nil && (sp.GRPC != nil || sp.Exec != nil) {
			t.Errorf("%s: a startup probe on health would restart pods that start during a broker outage", w)
		}
	}
}

func (r *rendered) checkDrain(t *testing.T) {
	for _, w := range r.workloads {
		ns, err1 := w.cfg.Int("drain.notserving_ms", 200)
		to, err2 := w.cfg.Int("drain.timeout_ms", 20000)
		if err1 != nil || err2 != nil {
			t.Errorf("%s: %v %v", w, err1, err2)
			continue
		}
		var sleepS int64
		switch l := w.c.Lifecycle; {
		case l == nil || l.PreStop == nil || l.PreStop.Sleep == nil:
			t.Errorf("%s: no preStop sleep (the image has no sleep command: use lifecycle.preStop.sleep)", w)
			continue
		case l.PreStop.Exec != nil || l.PreStop.HTTPGet != nil || l.PreStop.TCPSocket != nil:
			t.Errorf("%s: preStop must be the sleep action alone", w)
		default:
			sleepS = l.PreStop.Sleep.Seconds
		}
		want := max((ns+999)/1000, 1)
		if sleepS != want {
			t.Errorf("%s: preStop sleeps %d s; drain.notserving_ms = %d wants ceil(%d ms) = %d s", w, sleepS, ns, ns, want)
		}
		g := w.tmpl.Spec.TerminationGracePeriodSeconds
		need := sleepS*1000 + ns + to + drainMarginMs
		if g == nil || *g*1000 < need {
			got := "the default 30"
			if g != nil {
				got = strconv.FormatInt(*g, 10)
			}
			t.Errorf("%s: terminationGracePeriodSeconds %s s < preStop %d s + drain.notserving_ms %d + drain.timeout_ms %d + margin %d ms = %d ms",
				w, got, sleepS, ns, to, drainMarginMs, need)
		}
	}
}

// podNameVar returns X when value is exactly "$(X)" and X is the pod's name
// from the downward API.
func (w *workload) podNameVar(value string) (string, bool) {
	m := regexp.MustCompile(`^\$\(([A-Za-z_][A-Za-z0-9_]*)\)$`).FindStringSubmatch(value)
	if m == nil {
		return "", false
	}
	for _, e := range w.c.Env {
		if e.Name == m[1] {
			return m[1], e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.name"
		}
	}
	return m[1], false
}

func (r *rendered) checkIdentity(t *testing.T) {
	for _, w := range r.workloads {
		keys := []string{"replica"}
		if w.role == "scheduler" {
			keys = append(keys, "kafka.instance_id")
		}
		for _, k := range keys {
			v, err := w.cfg.Str(k, "")
			if err != nil {
				t.Errorf("%s: %v", w, err)
				continue
			}
			name, ok := w.podNameVar(v)
			if !ok {
				t.Errorf("%s: %s = %q after the --set flags; want \"$(POD_NAME)\" with POD_NAME from fieldRef metadata.name", w, k, v)
				continue
			}
			if w.kind != "StatefulSet" {
				continue
			}
			// the pods the StatefulSet makes: NAME-0 .. NAME-(n-1); each one's
			// value, as the kubelet expands it, must be its own
			n := int32(3)
			if w.replicas != nil && *w.replicas > n {
				n = *w.replicas
			}
			seen := map[string]string{}
			for i := range n {
				pod := fmt.Sprintf("%s-%d", w.name, i)
				got := strings.ReplaceAll(v, "$("+name+")", pod)
				if other, dup := seen[got]; dup {
					t.Errorf("%s: pods %s and %s share %s %q", w, other, pod, k, got)
				}
				seen[got] = pod
			}
		}
	}
}

func (r *rendered) checkResources(t *testing.T) {
	for _, w := range r.workloads {
		for _, c := range append(append([]corev1.Container{}, w.tmpl.Spec.InitContainers...), w.tmpl.Spec.Containers...) {
			for _, res := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
				req, okr := c.Resources.Requests[res]
				lim, okl := c.Resources.Limits[res]
				if !okr || !okl {
					t.Errorf("%s container %s: %s request and limit both needed", w, c.Name, res)
				} else if req.Cmp(lim) > 0 {
					t.Errorf("%s container %s: %s request %s > limit %s", w, c.Name, res, req.String(), lim.String())
				}
			}
		}
		if w.role != "executor" {
			continue
		}
		// exec handlers' children share the container's memory limit
		names, err := w.cfg.Strings("handlers.exec")
		if err != nil {
			t.Errorf("%s: %v", w, err)
		}
		def, _ := w.cfg.Int("handlers.concurrency", 8)
		sumMiB := int64(executorBaseMiB)
		for _, h := range names {
			conc, _ := w.cfg.Int("exec."+h+".concurrency", 0)
			if conc == 0 {
				conc = def
			}
			mem, _ := w.cfg.Int("exec."+h+".memory_mb", 0)
			if mem == 0 {
				t.Logf("%s: exec handler %s has no memory_mb: not counted", w, h)
			}
			sumMiB += conc * mem
		}
		lim := w.c.Resources.Limits[corev1.ResourceMemory]
		if need := resource.MustParse(strconv.FormatInt(sumMiB, 10) + "Mi"); lim.Cmp(need) < 0 {
			t.Errorf("%s: memory limit %s < %d MiB (the exec handlers at concurrency x memory_mb, plus %d MiB)", w, lim.String(), sumMiB, executorBaseMiB)
		}
	}
}

// serviceWorkloads: the workloads whose pods the Service selects
// (checkServices reports a Service that selects none).
func (r *rendered) serviceWorkloads(s *corev1.Service) []*workload {
	if len(s.Spec.Selector) == 0 {
		return nil
	}
	return r.selected(s.Namespace, labels.SelectorFromSet(s.Spec.Selector))
}

// servicePort returns the container port the Service's port forwards to on w.
func servicePort(s *corev1.Service, w *workload, port int32) (int32, bool) {
	for _, p := range s.Spec.Ports {
		if p.Port != port {
			continue
		}
		tp := p.TargetPort
		if tp.Type == intstr.Int && tp.IntVal == 0 {
			tp = intstr.FromInt32(p.Port)
		}
		return w.containerPort(tp)
	}
	return 0, false
}

func (r *rendered) checkServices(t *testing.T) {
	for _, s := range r.services {
		ws := r.serviceWorkloads(s)
		if len(ws) == 0 {
			t.Errorf("Service %s: selector %v matches no pods (a Service without a selector is not expected here)", s.Name, s.Spec.Selector)
		}
		for _, w := range ws {
			for _, p := range s.Spec.Ports {
				if _, ok := servicePort(s, w, p.Port); !ok {
					t.Errorf("Service %s port %d: targetPort %s is no port of %s", s.Name, p.Port, p.TargetPort.String(), w)
				}
			}
		}
	}
	for _, w := range r.workloads {
		if w.kind != "StatefulSet" {
			continue
		}
		name := ""
		// the governing Service (spec.serviceName) must exist, headless, over these pods
		for _, s := range r.services {
			if s.Namespace == w.ns && s.Name == w.serviceName {
				name = s.Name
				if s.Spec.ClusterIP != corev1.ClusterIPNone {
					t.Errorf("%s: its Service %s is not headless", w, s.Name)
				}
				if !slices.Contains(r.serviceWorkloads(s), w) {
					t.Errorf("%s: its Service %s does not select its pods", w, s.Name)
				}
			}
		}
		if name == "" {
			t.Errorf("%s: serviceName %q: no such Service", w, w.serviceName)
		}
	}
	// Submit: a ClusterIP Service onto the schedulers' gRPC port
	submit := false
	for _, s := range r.services {
		if s.Spec.ClusterIP == corev1.ClusterIPNone || s.Spec.Type == corev1.ServiceTypeExternalName {
			continue
		}
		for _, w := range r.serviceWorkloads(s) {
			for _, p := range s.Spec.Ports {
				if cp, ok := servicePort(s, w, p.Port); ok && w.role == "scheduler" && cp == w.grpcPort {
					submit = true
				}
			}
		}
	}
	if !submit {
		t.Errorf("no ClusterIP Service reaches the schedulers' gRPC (Submit) port")
	}
}

// dnsTarget reads dns:///NAME[.NAMESPACE[.svc[.cluster.local]]]:PORT.
func dnsTarget(target, defNS string) (name, ns string, port int32, err error) {
	rest, ok := strings.CutPrefix(target, "dns:///")
	if !ok {
		return "", "", 0, fmt.Errorf("%q is not dns:///NAME:PORT: with an ipv4: list, replicas do not follow the pods", target)
	}
	host, p, err := net.SplitHostPort(rest)
	if err != nil {
		return "", "", 0, err
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		return "", "", 0, err
	}
	parts := strings.Split(strings.TrimSuffix(host, "."), ".")
	ns = defNS
	if len(parts) >= 2 {
		ns = parts[1]
	}
	if len(parts) >= 3 && (parts[2] != "svc" || len(parts) > 3 && strings.Join(parts[3:], ".") != "cluster.local") {
		return "", "", 0, fmt.Errorf("%q: not a Service name (NAME.NAMESPACE.svc[.cluster.local])", host)
	}
	return parts[0], ns, int32(n), nil
}

// links: which service calls which, through which target of its config.
var links = []struct{ from, key, to string }{
	{"scheduler", "executors.target", "executor"},
	{"executor", "sinks.target", "sink"},
}

func (r *rendered) checkTargets(t *testing.T) {
	for _, link := range links {
		for _, w := range r.byRole(link.from) {
			target, err := w.cfg.Str(link.key, "")
			if err != nil {
				t.Errorf("%s: %v", w, err)
				continue
			}
			name, ns, port, err := dnsTarget(target, w.ns)
			if err != nil {
				t.Errorf("%s: %s: %v", w, link.key, err)
				continue
			}
			var svc *corev1.Service
			for _, s := range r.services {
				if s.Name == name && s.Namespace == ns {
					svc = s
				}
			}
			if svc == nil {
				t.Errorf("%s: %s = %q: no Service %s in namespace %s", w, link.key, target, name, ns)
				continue
			}
			if svc.Spec.ClusterIP != corev1.ClusterIPNone {
				t.Errorf("Service %s: %s resolves it for round_robin over the pods: it must be headless (clusterIP: None)", name, link.key)
			}
			if svc.Spec.PublishNotReadyAddresses {
				t.Errorf("Service %s: publishNotReadyAddresses must be false (a draining or not-ready pod leaves DNS)", name)
			}
			ws := r.serviceWorkloads(svc)
			if len(ws) == 0 {
				t.Errorf("%s: %s = %q: Service %s selects no %s pods", w, link.key, target, name, link.to)
			}
			for _, tw := range ws {
				if tw.role != link.to {
					t.Errorf("Service %s (%s of the %s) selects %s, a %s", name, link.key, link.from, tw, tw.role)
					continue
				}
				if cp, ok := servicePort(svc, tw, port); !ok || cp != tw.grpcPort {
					t.Errorf("%s: %s port %d reaches port %d (found %v) of %s, which serves gRPC on %d", w, link.key, port, cp, ok, tw, tw.grpcPort)
				}
			}
		}
	}
	// one Kafka for the schedulers and the sinks
	var boots []string
	for _, w := range r.workloads {
		if w.role == "scheduler" || w.role == "sink" {
			b, _ := w.cfg.Str("kafka.bootstrap", "127.0.0.1:9092")
			boots = append(boots, w.String()+": "+b)
			if strings.HasPrefix(b, "127.") || strings.HasPrefix(b, "localhost") {
				t.Errorf("%s: kafka.bootstrap %q is the pod itself", w, b)
			}
		}
	}
	if len(boots) == 0 {
		return
	}
	for _, b := range boots[1:] {
		if strings.SplitN(b, ": ", 2)[1] != strings.SplitN(boots[0], ": ", 2)[1] {
			t.Errorf("the schedulers and sinks name different Kafkas: %q", boots)
		}
	}
}

func (r *rendered) checkPDBs(t *testing.T) {
	covered := map[*workload]int{}
	for _, p := range r.pdbs {
		if p.Spec.MinAvailable != nil {
			t.Errorf("PDB %s: minAvailable set; want maxUnavailable: 1 alone", p.Name)
		}
		if mu := p.Spec.MaxUnavailable; mu == nil || mu.Type != intstr.Int || mu.IntVal != 1 {
			t.Errorf("PDB %s: maxUnavailable %v, want 1 (one disruption at a time)", p.Name, mu)
		}
		sel, err := metav1.LabelSelectorAsSelector(p.Spec.Selector)
		if err != nil || sel.Empty() {
			t.Errorf("PDB %s: selector %v: %v", p.Name, p.Spec.Selector, err)
			continue
		}
		ws := r.selected(p.Namespace, sel)
		if len(ws) != 1 {
			t.Errorf("PDB %s: selector %s matches %d workloads' pods, want 1", p.Name, sel, len(ws))
		}
		for _, w := range ws {
			covered[w]++
		}
	}
	for _, w := range r.workloads {
		if covered[w] != 1 {
			t.Errorf("%s: covered by %d PodDisruptionBudgets, want 1", w, covered[w])
		}
	}
}

// peer is a pod that would open a connection.
type peer struct {
	what     string
	ns       string
	nsLabels labels.Set
	labels   labels.Set
}

func (r *rendered) nsLabels(ns string) labels.Set {
	l := labels.Set{"kubernetes.io/metadata.name": ns}
	if n := r.namespaces[ns]; n != nil {
		for k, v := range n.Labels {
			l[k] = v
		}
	}
	return l
}

// allowed evaluates the NetworkPolicies for TCP from src to port of dst's pods.
func (r *rendered) allowed(t *testing.T, src peer, dst *workload, port int32) bool {
	selectedBy := 0
	for _, np := range r.netpols {
		if np.Namespace != dst.ns {
			continue
		}
		sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
		if err != nil {
			t.Errorf("NetworkPolicy %s: %v", np.Name, err)
			continue
		}
		ingress := len(np.Spec.PolicyTypes) == 0 || slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress)
		if !ingress || !sel.Matches(dst.podLabels()) {
			continue
		}
		selectedBy++
		for _, rule := range np.Spec.Ingress {
			if !portMatches(rule.Ports, dst, port) {
				continue
			}
			if len(rule.From) == 0 {
				return true
			}
			for _, f := range rule.From {
				if peerMatches(t, f, np.Namespace, src) {
					return true
				}
			}
		}
	}
	return selectedBy == 0
}

func portMatches(ports []networkingv1.NetworkPolicyPort, dst *workload, port int32) bool {
	if len(ports) == 0 {
		return true
	}
	for _, p := range ports {
		if p.Protocol != nil && *p.Protocol != corev1.ProtocolTCP {
			continue
		}
		if p.Port == nil {
			return true
		}
		n, ok := dst.containerPort(*p.Port)
		if p.Port.Type == intstr.Int {
			n, ok = p.Port.IntVal, true
		}
		if !ok {
			continue
		}
		if n == port || p.EndPort != nil && port >= n && port <= *p.EndPort {
			return true
		}
	}
	return false
}

func peerMatches(t *testing.T, f networkingv1.NetworkPolicyPeer, policyNS string, src peer) bool {
	if f.IPBlock != nil {
		return false // pod-to-pod checks do not use address blocks
	}
	if f.NamespaceSelector != nil {
		nsSel, err := metav1.LabelSelectorAsSelector(f.NamespaceSelector)
		if err != nil {
			t.Errorf("namespaceSelector: %v", err)
			return false
		}
		if !nsSel.Matches(src.nsLabels) {
			return false
		}
	} else if src.ns != policyNS {
		return false
	}
	if f.PodSelector == nil {
		return true
	}
	podSel, err := metav1.LabelSelectorAsSelector(f.PodSelector)
	if err != nil {
		t.Errorf("podSelector: %v", err)
		return false
	}
	return podSel.Matches(src.labels)
}

func (r *rendered) checkNetworkPolicies(t *testing.T) {
	if len(r.workloads) == 0 {
		return
	}
	ns := r.workloads[0].ns
	podOf := func(w *workload) peer {
		return peer{w.String(), w.ns, r.nsLabels(w.ns), w.podLabels()}
	}
	stranger := peer{"a pod of another app in " + ns, ns, r.nsLabels(ns), labels.Set{"app": "other"}}
	client := peer{"a client pod in namespace clients", "clients", labels.Set{"kubernetes.io/metadata.name": "clients"}, labels.Set{"app": "client"}}
	expect := func(src peer, dst *workload, port int32, want bool, why string) {
		if got := r.allowed(t, src, dst, port); got != want {
			verb := "cannot"
			if got {
				verb = "can"
			}
			t.Errorf("%s %s reach %s port %d: %s", src.what, verb, dst, port, why)
		}
	}
	for _, e := range r.byRole("executor") {
		for _, s := range r.byRole("scheduler") {
			expect(podOf(s), e, e.grpcPort, true, "schedulers call Execute")
		}
		expect(stranger, e, e.grpcPort, false, "only the mesh's pods may call an executor")
		expect(client, e, e.grpcPort, false, "only the mesh's pods may call an executor")
	}
	for _, k := range r.byRole("sink") {
		for _, e := range r.byRole("executor") {
			expect(podOf(e), k, k.grpcPort, true, "executors call Publish")
		}
		expect(stranger, k, k.grpcPort, false, "only the mesh's pods may call a sink")
		expect(client, k, k.grpcPort, false, "only the mesh's pods may call a sink")
	}
	for _, s := range r.byRole("scheduler") {
		expect(client, s, s.grpcPort, true, "Submit is open to clients")
		expect(client, s, s.metricsPort, false, "the metrics port is plain HTTP; with admin.enabled it takes POST /admin/pause with a bearer token in clear")
	}
	for _, w := range r.workloads {
		expect(podOf(w), w, w.metricsPort, true, "the mesh's pods (execmeshctl status) read the metrics")
	}
}

func (r *rendered) checkHPA(t *testing.T) {
	for _, h := range r.hpas {
		ref := h.Spec.ScaleTargetRef
		if ref.APIVersion != "apps/v1" || ref.Kind != "Deployment" {
			t.Errorf("HPA %s: scales %s %s, want an apps/v1 Deployment", h.Name, ref.APIVersion, ref.Kind)
			continue
		}
		d := r.deploys[h.Namespace+"/"+ref.Name]
		if d == nil {
			t.Errorf("HPA %s: Deployment %s is not in the render", h.Name, ref.Name)
			continue
		}
		if d.Spec.Replicas != nil {
			t.Errorf("HPA %s: Deployment %s sets replicas: %d, which every apply would reset under the HPA", h.Name, d.Name, *d.Spec.Replicas)
		}
		if h.Spec.MinReplicas == nil || *h.Spec.MinReplicas < 2 || *h.Spec.MinReplicas > h.Spec.MaxReplicas {
			t.Errorf("HPA %s: minReplicas %v, maxReplicas %d: want 2 <= min <= max", h.Name, h.Spec.MinReplicas, h.Spec.MaxReplicas)
		}
		queue := false
		for _, m := range h.Spec.Metrics {
			if m.Type == autoscalingv2.ExternalMetricSourceType && m.External != nil && strings.HasPrefix(m.External.Metric.Name, "execmesh_") ||
				m.Type == autoscalingv2.PodsMetricSourceType && m.Pods != nil && strings.HasPrefix(m.Pods.Metric.Name, "execmesh_") {
				queue = true
			}
		}
		if !queue {
			t.Errorf("HPA %s: no External or Pods metric on an execmesh_ queue metric", h.Name)
		}
	}
	if filepath.Base(r.dir) == "production" {
		found := false
		for _, h := range r.hpas {
			for _, w := range r.byRole("executor") {
				if h.Spec.ScaleTargetRef.Name == w.name && h.Namespace == w.ns {
					found = true
				}
			}
		}
		if !found {
			t.Errorf("production: no HPA scales the executors")
		}
	}
}

// secretKeys: where a kubernetes.io/tls Secret with ca.crt (as cert-manager
// writes it) holds each file the tls.* keys name.
var secretKeys = map[string]string{"tls.cert_file": "tls.crt", "tls.key_file": "tls.key", "tls.ca_file": "ca.crt"}

// checkTLS: every gRPC port serves mutual TLS (no config, with its --set
// flags, allows plaintext; the schedulers grant Submit to someone), and every
// file tls.* names comes from a Secret
// mounted read-only in the pod, readable by the service's user and no one
// else, one Secret per service (each its own identity).
func (r *rendered) checkTLS(t *testing.T) {
	secretRole := map[string]string{} // namespace/Secret name -> role
	for _, w := range r.workloads {
		if v, ok := w.cfg["security.allow_plaintext"]; ok && v != false && v != "false" {
			t.Errorf("%s: security.allow_plaintext = %v: the gRPC ports of deploy/ serve mutual TLS only", w, v)
		}
		// with TLS on, Submit is denied to every identity no authz group names
		if w.role == "scheduler" && !slices.ContainsFunc(slices.Collect(maps.Keys(w.cfg)), func(k string) bool {
			return strings.HasPrefix(k, "authz.") && strings.HasSuffix(k, ".identity")
		}) {
			t.Errorf("%s: no authz group (authz.NAME.identity): with TLS on, every Submit would be refused", w)
		}
		seen := map[string]bool{} // Secret volumes checked
		for _, key := range slices.Sorted(maps.Keys(secretKeys)) {
			path, err := w.cfg.Str(key, "")
			if err != nil || path == "" {
				t.Errorf("%s: %s is not set (%v): the gRPC port on %s needs mutual TLS", w, key, err, w.cfg["grpc.listen"])
				continue
			}
			m, v, rel := w.mountFor(path)
			switch {
			case m == nil || v == nil:
				t.Errorf("%s: %s = %q is on no volume of the container", w, key, path)
				continue
			case v.Secret == nil:
				t.Errorf("%s: %s = %q is on volume %s (at %s), not a Secret: certificates and keys come from a Secret, never from the image or a ConfigMap", w, key, path, v.Name, m.MountPath)
				continue
			}
			sec := v.Secret
			if !seen[v.Name] { // the volume's own checks, once
				seen[v.Name] = true
				if !m.ReadOnly {
					t.Errorf("%s: Secret volume %s is mounted read-write", w, v.Name)
				}
				if m.SubPath != "" || m.SubPathExpr != "" {
					t.Errorf("%s: Secret volume %s is mounted with a subPath: its files would not follow a renewed Secret", w, v.Name)
				}
				if sec.Optional != nil && *sec.Optional {
					t.Errorf("%s: Secret %s is optional: the pod must not start without its certificate", w, sec.SecretName)
				}
			}
			secKey, mode := rel, int32(corev1.SecretVolumeSourceDefaultMode)
			if sec.DefaultMode != nil {
				mode = *sec.DefaultMode
			}
			if len(sec.Items) > 0 {
				secKey = ""
				for _, it := range sec.Items {
					if it.Path == rel {
						secKey = it.Key
						if it.Mode != nil {
							mode = *it.Mode
						}
					}
				}
			}
			if secKey != secretKeys[key] {
				t.Errorf("%s: %s = %q is key %q of Secret %s; a kubernetes.io/tls Secret (cert-manager's) holds it as %q", w, key, path, secKey, sec.SecretName, secretKeys[key])
			}
			// the kubelet chowns a Secret volume's files to fsGroup (root
			// otherwise), and the services run as a non-root user
			fsGroup := w.tmpl.Spec.SecurityContext != nil && w.tmpl.Spec.SecurityContext.FSGroup != nil
			if mode&0o007 != 0 {
				t.Errorf("%s: Secret %s: mode %#o lets any user in the container read %s", w, sec.SecretName, mode, rel)
			}
			if !fsGroup || mode&0o040 == 0 {
				t.Errorf("%s: Secret %s: mode %#o, fsGroup set: %v: the service's user could not read %s (want group read and the pod's fsGroup)", w, sec.SecretName, mode, fsGroup, rel)
			}
			id := w.ns + "/" + sec.SecretName
			if other, ok := secretRole[id]; ok && other != w.role {
				t.Errorf("Secret %s serves the %s and the %s: each service needs its own certificate (its identity, spiffe://execmesh/<service>)", sec.SecretName, other, w.role)
			}
			secretRole[id] = w.role
		}
	}
}

// No private key in the deploy tree: the Secrets come from cert-manager or an
// operator in the cluster. (A Secret object in the manifests fails the render:
// it is not among the kinds render.go accepts.)
func TestNoPrivateKeysInDeploy(t *testing.T) {
	err := filepath.WalkDir(repoRoot+"/deploy", func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if strings.Contains(string(b), "PRIVATE KEY-----") {
			t.Errorf("%s holds a private key: keys belong in Secrets made in the cluster, never in the repository", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// One truth: the ConfigMaps carry deploy/<service>.cfg byte for byte.
func (r *rendered) checkConfigsAreDeployFiles(t *testing.T) {
	for _, w := range r.workloads {
		want, err := os.ReadFile(filepath.Join(repoRoot, "deploy", w.role+".cfg"))
		if err != nil {
			t.Errorf("%s: %v", w, err)
			continue
		}
		if w.cfgText != string(want) {
			t.Errorf("%s: its ConfigMap's %s differs from deploy/%s.cfg", w, w.cfgName, w.role)
		}
	}
}

// Every ConfigMap's config, with the container's --set flags (the pod name
// put in), passes the service's own --check-config with the pod's mounted
// files present: --check-config reads the TLS files (a PEM certificate, a
// PEM key). A test CA (scripts/test-ca.sh) stands in for the cluster's: each
// Secret volume of the pod becomes a directory laid out as a kubernetes.io/tls
// Secret with ca.crt (the service's own test certificate), and the config is
// changed in one way only: the path prefix of each Secret mount (e.g.
// "/etc/execmesh/tls/") becomes that directory, in the file's text and in the
// --set values. Everything else is checked as shipped. As shipped, outside a
// pod, the same config is refused for the missing file: the check reads them.
func (r *rendered) checkConfigsWithBinaries(t *testing.T) {
	build := os.Getenv("EM_BUILD_DIR")
	if build == "" {
		t.Fatal("EM_BUILD_DIR is not set: it names the build whose services check the configs (e.g. EM_BUILD_DIR=build)")
	}
	if !filepath.IsAbs(build) {
		build = filepath.Join(repoRoot, build)
	}
	ca := filepath.Join(t.TempDir(), "ca")
	if out, err := exec.Command(filepath.Join(repoRoot, "scripts", "test-ca.sh"), ca, "--days", "1").CombinedOutput(); err != nil {
		t.Fatalf("scripts/test-ca.sh: %v\n%s", err, out)
	}
	for _, w := range r.workloads {
		bin := filepath.Join(build, "services", w.role, "execmesh-"+w.role)
		if _, err := os.Stat(bin); err != nil {
			t.Errorf("%s: %v (build the services first)", w, err)
			continue
		}
		pod := t.TempDir()
		text, sets := w.cfgText, slices.Clone(w.sets)
		rewrites := 0
		for _, m := range w.c.VolumeMounts {
			v := w.volume(m.Name)
			if v == nil || v.Secret == nil || m.SubPath != "" {
				continue
			}
			dir := filepath.Join(pod, m.Name)
			files := map[string]string{"tls.crt": w.role + ".pem", "tls.key": w.role + ".key", "ca.crt": "ca.pem"}
			for key, from := range files {
				path := key
				for _, it := range v.Secret.Items {
					if it.Key == key {
						path = it.Path
					}
				}
				b, err := os.ReadFile(filepath.Join(ca, from))
				if err == nil {
					err = os.MkdirAll(filepath.Dir(filepath.Join(dir, path)), 0o755)
				}
				if err == nil {
					err = os.WriteFile(filepath.Join(dir, path), b, 0o600)
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			prefix := strings.TrimSuffix(m.MountPath, "/") + "/"
			rewrites += strings.Count(text, `"`+prefix)
			text = strings.ReplaceAll(text, `"`+prefix, `"`+dir+"/")
			for i, s := range sets {
				if k, val, ok := strings.Cut(s, "="); ok && strings.HasPrefix(val, prefix) {
					sets[i] = k + "=" + dir + "/" + strings.TrimPrefix(val, prefix)
					rewrites++
				}
			}
		}
		if rewrites == 0 {
			t.Errorf("%s: its config names no file under a Secret mount (see the tls check)", w)
		}
		check := func(text string, sets []string) (string, []string, error) {
			file := filepath.Join(pod, w.cfgName)
			if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
			args := []string{"--config", file}
			for _, s := range sets {
				for _, e := range w.c.Env {
					if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.name" {
						s = strings.ReplaceAll(s, "$("+e.Name+")", w.name+"-0")
					}
				}
				args = append(args, "--set", s)
			}
			args = append(args, "--check-config")
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
			return string(out), args, err
		}
		if out, args, err := check(text, sets); err != nil {
			t.Errorf("%s: %s %s: %v\n%s", w, bin, strings.Join(args, " "), err, out)
		}
		if rewrites > 0 {
			if out, args, err := check(w.cfgText, w.sets); err == nil || !strings.Contains(out, "tls.") {
				t.Errorf("%s: as shipped, without the Secret's files, %s %s: %v, want a refusal naming the tls.* key\n%s", w, bin, strings.Join(args, " "), err, out)
			}
		}
	}
}
