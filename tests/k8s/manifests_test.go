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

// mountedFile returns the name and the text of the ConfigMap key mounted at path.
func (r *rendered) mountedFile(t *testing.T, w *workload, path string) (string, string) {
	t.Helper()
	for _, m := range w.c.VolumeMounts {
		rel := ""
		switch {
		case m.SubPath != "" && path == m.MountPath:
			rel = m.SubPath
		case m.SubPath == "" && strings.HasPrefix(path, strings.TrimSuffix(m.MountPath, "/")+"/"):
			rel = strings.TrimPrefix(path, strings.TrimSuffix(m.MountPath, "/")+"/")
		default:
			continue
		}
		for _, v := range w.tmpl.Spec.Volumes {
			if v.Name != m.Name {
				continue
			}
			if v.ConfigMap == nil {
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
		t.Fatalf("%s: volume mount %s names no volume", w, m.Name)
	}
	t.Fatalf("%s: --config %s is on no volume mount", w, path)
	return "", ""
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

func (r *rendered) checkProbes(t *testing.T) {
	for _, w := range r.workloads {
		rp := w.c.ReadinessProbe
		switch {
		case rp == nil || rp.GRPC == nil:
			t.Errorf("%s: readiness must be the native gRPC probe on the health service", w)
		case rp.GRPC.Port != w.grpcPort:
			t.Errorf("%s: readiness gRPC port %d, the service's gRPC (health) port is %d", w, rp.GRPC.Port, w.grpcPort)
		case rp.GRPC.Service != nil && *rp.GRPC.Service != "":
			t.Errorf("%s: readiness asks service %q; \"\" is the overall health", w, *rp.GRPC.Service)
		}
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

func (r *rendered) checkTargets(t *testing.T) {
	for _, link := range []struct{ from, key, to string }{
		{"scheduler", "executors.target", "executor"},
		{"executor", "sinks.target", "sink"},
	} {
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
		expect(client, s, s.metricsPort, false, "the metrics port carries POST /admin/pause")
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
// put in), passes the service's own --check-config.
func (r *rendered) checkConfigsWithBinaries(t *testing.T) {
	build := os.Getenv("EM_BUILD_DIR")
	if build == "" {
		t.Fatal("EM_BUILD_DIR is not set: it names the build whose services check the configs (e.g. EM_BUILD_DIR=build)")
	}
	if !filepath.IsAbs(build) {
		build = filepath.Join(repoRoot, build)
	}
	for _, w := range r.workloads {
		bin := filepath.Join(build, "services", w.role, "execmesh-"+w.role)
		if _, err := os.Stat(bin); err != nil {
			t.Errorf("%s: %v (build the services first)", w, err)
			continue
		}
		file := filepath.Join(t.TempDir(), w.cfgName)
		if err := os.WriteFile(file, []byte(w.cfgText), 0o644); err != nil {
			t.Fatal(err)
		}
		args := []string{"--config", file}
		pod := w.name + "-0"
		for _, s := range w.sets {
			for _, e := range w.c.Env {
				if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.name" {
					s = strings.ReplaceAll(s, "$("+e.Name+")", pod)
				}
			}
			args = append(args, "--set", s)
		}
		args = append(args, "--check-config")
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
		cancel()
		if err != nil {
			t.Errorf("%s: %s %s: %v\n%s", w, bin, strings.Join(args, " "), err, out)
		}
	}
}
