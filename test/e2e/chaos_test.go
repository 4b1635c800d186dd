package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/fluxinstance/kubectl-fluxinstance/test/testenv"
)

// The chaos test drives one API server with random plugin commands (applies of random component
// sets, some two at a time, some interrupted by SIGINT or SIGKILL, deletes (some interrupted too), applies by a user who
// may not touch ConfigMaps), then one clean apply, and checks after every round what must hold
// whatever happened: the record lists what the plugin left in the cluster, bystanders are
// untouched, and no command that exited 0 left its work undone. A failure names the seed:
// CHAOS_SEED=<seed> replays the same sequence of commands (timings differ).
//
// CHAOS_SEED fixes the seed (default: the clock); CHAOS_ROUNDS the number of rounds (default 30).

// Facts of the record and of the rendering (docs/inventory.md), written out rather than taken
// from the plugin's packages: the test checks the published format, not the code's idea of it.
const (
	chaosNamespace    = "flux-system"
	chaosRecord       = "kubectl-fluxinstance-inventory"
	chaosMigration    = "kubectl-fluxinstance-migration"
	labelOwnerName    = "fluxcd.controlplane.io/name"
	labelOwnerNS      = "fluxcd.controlplane.io/namespace"
	chaosFluxVersion  = "2.7.5"
	chaosAdmin        = "testenv-admin" // the user of the environment's admin kubeconfig
	chaosNoConfigMaps = "chaos-no-configmaps"

	stateApplied = "Applied"
	statePending = "Pending"
	stateDeleted = "Deleted"
)

// Outcomes of a command. All but outcomeFailed are allowed; the counts are logged at the end.
const (
	outcomeOK          = "exit 0"
	outcomeLocked      = "locked"
	outcomeInterrupted = "interrupted"
	outcomeRefused     = "refused for permissions"
	// A delete before any apply recorded anything: the plugin rightly has nothing to delete.
	outcomeNothingToDelete = "nothing to delete (no record)"
	outcomeFailed          = "other failure"
)

// chaosComponents returns the optional components (source-controller is always in).
func chaosComponents() []string {
	return []string{"kustomize-controller", "helm-controller", "notification-controller",
		"image-reflector-controller", "image-automation-controller"}
}

// chaosCommand is one plugin run of a round.
type chaosCommand struct {
	verb       string // "apply" or "delete"
	restricted bool   // run as the user without ConfigMap rights
	components []string
	signal     syscall.Signal // 0: not interrupted
	delay      time.Duration  // before the signal
	waitLock   bool           // pass --wait-lock: wait for the instance rather than fail when it is held
}

func (c chaosCommand) String() string {
	s := c.verb
	if c.verb == "apply" {
		short := make([]string, len(c.components))
		for i, comp := range c.components {
			short[i] = strings.TrimSuffix(comp, "-controller")
		}
		s += "[" + strings.Join(short, ",") + "]"
	}
	if c.restricted {
		s += " as " + chaosNoConfigMaps
	}
	if c.waitLock {
		s += " --wait-lock"
	}
	if c.signal != 0 {
		s += fmt.Sprintf(" %s after %s", signalName(c.signal), c.delay.Round(time.Millisecond))
	}
	return s
}

func signalName(s syscall.Signal) string {
	switch s {
	case syscall.SIGINT:
		return "SIGINT"
	case syscall.SIGKILL:
		return "SIGKILL"
	}
	return s.String()
}

// chaosResult is how a command ended.
type chaosResult struct {
	cmd        chaosCommand
	output     string
	code       int  // -1 when a signal ended the process
	signaled   bool // a signal ended the process
	sent       bool // the test's signal reached the running process
	timedOut   bool
	start, end time.Time
	outcome    string
}

func (r chaosResult) String() string {
	return fmt.Sprintf("%s → %s (exit %d, %s)", r.cmd, r.outcome, r.code, r.end.Sub(r.start).Round(10*time.Millisecond))
}

// planRounds draws every round from rng before any runs, so that a seed replays the same commands
// whatever the cluster did.
func planRounds(rng *rand.Rand, n int) [][]chaosCommand {
	interrupt := func(p float64) (syscall.Signal, time.Duration) {
		if rng.Float64() >= p {
			return 0, 0
		}
		sig := syscall.SIGINT
		if rng.IntN(2) == 0 {
			sig = syscall.SIGKILL
		}
		return sig, time.Duration(rng.Int64N(int64(1500 * time.Millisecond)))
	}
	apply := func(p float64) chaosCommand {
		c := chaosCommand{verb: "apply", components: randomComponents(rng)}
		c.signal, c.delay = interrupt(p)
		return c
	}
	rounds := make([][]chaosCommand, 0, n)
	for range n {
		switch p := rng.Float64(); {
		case p < 0.45:
			rounds = append(rounds, []chaosCommand{apply(0.4)})
		case p < 0.70:
			a, b := apply(0.25), apply(0.25)
			for slices.Equal(a.components, b.components) {
				b.components = randomComponents(rng)
			}
			// Half the pairs run one after the other through the lock; the others race for it.
			a.waitLock, b.waitLock = rng.IntN(2) == 0, rng.IntN(2) == 0
			rounds = append(rounds, []chaosCommand{a, b})
		case p < 0.85:
			d := chaosCommand{verb: "delete"}
			d.signal, d.delay = interrupt(0.3)
			rounds = append(rounds, []chaosCommand{d})
		default:
			c := apply(0)
			c.restricted = true
			rounds = append(rounds, []chaosCommand{c})
		}
	}
	return rounds
}

func randomComponents(rng *rand.Rand) []string {
	out := []string{"source-controller"}
	for _, c := range chaosComponents() {
		if rng.IntN(2) == 0 {
			out = append(out, c)
		}
	}
	return out
}

// chaosRun is the state of one chaos test.
type chaosRun struct {
	t              *testing.T
	seed           uint64
	round, rounds  int
	env            *testenv.Env
	c              client.Client
	bin, dist, dir string
	restrictedKC   string
	// kinds are every kind the rendering can produce (all components): where the test looks for
	// objects with the owner labels.
	kinds []schema.GroupVersionKind
	// renderings are the object ids of each component set's rendering, by component set.
	renderings map[string]map[string]bool
	bystanders []bystander
	counts     map[string]int
	// waitedOutLock: a command has already waited for a killed command's lock to expire.
	waitedOutLock bool
}

// errorf fails the test with the seed and round, so that any failure can be replayed.
func (r *chaosRun) errorf(format string, args ...any) {
	r.t.Helper()
	r.t.Errorf("[CHAOS_SEED=%d round %s] %s", r.seed, r.roundName(), fmt.Sprintf(format, args...))
}

func (r *chaosRun) fatalf(format string, args ...any) {
	r.t.Helper()
	r.t.Fatalf("[CHAOS_SEED=%d round %s] %s", r.seed, r.roundName(), fmt.Sprintf(format, args...))
}

func (r *chaosRun) roundName() string {
	switch {
	case r.round == 0:
		return "setup"
	case r.round > r.rounds:
		return "final"
	}
	return fmt.Sprintf("%d/%d", r.round, r.rounds)
}

func TestChaos(t *testing.T) {
	began := time.Now()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("CHAOS_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("CHAOS_SEED=%q: %v", s, err)
		}
	}
	t.Logf("chaos seed %d (replay with CHAOS_SEED=%d)", seed, seed)
	rounds := 30
	if s := os.Getenv("CHAOS_ROUNDS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			t.Fatalf("[CHAOS_SEED=%d] CHAOS_ROUNDS=%q: want a number of rounds", seed, s)
		}
		rounds = n
	}
	rng := rand.New(rand.NewPCG(seed, seed))
	plan := planRounds(rng, rounds)
	final := chaosCommand{verb: "apply", components: randomComponents(rng)}

	dist := testenv.DistributionDir(t)
	env := testenv.Start(t)
	r := &chaosRun{
		t: t, seed: seed, rounds: rounds, env: env,
		c:    testenv.FastClient(t, env.Config, 200, 400),
		bin:  newPlugin(t).path(),
		dist: dist, dir: t.TempDir(),
		renderings: map[string]map[string]bool{},
		counts:     map[string]int{},
	}
	ctx := t.Context()
	// Logged however the test ends (a Fatal included): the counts are the report of the run.
	defer func() {
		var parts []string
		for _, o := range []string{outcomeOK, outcomeLocked, outcomeInterrupted, outcomeRefused, outcomeNothingToDelete, outcomeFailed} {
			parts = append(parts, fmt.Sprintf("%s: %d", o, r.counts[o]))
		}
		t.Logf("chaos seed %d: %d rounds, outcomes: %s; took %s", seed, rounds, strings.Join(parts, ", "), time.Since(began).Round(time.Second))
	}()

	r.kinds = r.renderKinds(ctx)
	r.createBystanders(ctx)
	r.restrictedKC = r.grantAllButConfigMaps(ctx, chaosNoConfigMaps)
	final.waitLock = true
	t.Logf("setup done after %s", time.Since(began).Round(time.Second))

	for i, cmds := range plan {
		r.round = i + 1
		r.runRound(ctx, cmds)
		if t.Failed() {
			// Later rounds would only report the same damage again; the final apply still runs, to
			// show whether a clean apply repairs it.
			t.Logf("[CHAOS_SEED=%d] stopping the rounds after round %d: it failed", seed, r.round)
			break
		}
	}

	r.round = rounds + 1
	res := r.runRound(ctx, []chaosCommand{final})
	if res[0].outcome != outcomeOK {
		r.errorf("(c) the final clean apply must succeed: %s\n%s", res[0], testenv.Last(res[0].output, 3000))
	}
	if rec := r.readRecord(ctx); rec.state != stateApplied {
		r.errorf("(a) after the final clean apply the record's state is %q, want %q", rec.state, stateApplied)
	}
}

// runRound starts the round's commands together, waits for all, classifies how each ended and
// checks what must hold after it.
func (r *chaosRun) runRound(ctx context.Context, cmds []chaosCommand) []chaosResult {
	r.t.Helper()
	r.handleStaleLock(ctx, cmds)
	before := r.readRecord(ctx)
	var snapshot map[string]string
	if cmds[0].restricted {
		snapshot = r.snapshot(ctx)
	}
	done := make(chan chaosResult, len(cmds))
	for _, cmd := range cmds {
		go func() { done <- r.run(ctx, cmd) }()
	}
	results := make([]chaosResult, 0, len(cmds))
	for range cmds {
		results = append(results, <-done)
	}
	slices.SortFunc(results, func(a, b chaosResult) int { return a.end.Compare(b.end) })

	var lines []string
	interrupted := false
	for i := range results {
		res := &results[i]
		res.outcome = classify(*res, before.exists)
		r.counts[res.outcome]++
		lines = append(lines, res.String())
		interrupted = interrupted || res.outcome == outcomeInterrupted
		if res.outcome == outcomeFailed {
			r.errorf("%s: a failure that is neither an interruption, a lock nor a refusal:\n%s", res, testenv.Last(res.output, 3000))
		}
	}
	r.t.Logf("round %s: %s", r.roundName(), strings.Join(lines, " ∥ "))
	if interrupted {
		// An interrupted process's last request may still be in the API server; the checks wait
		// for it rather than report a state that the request completes a moment later.
		time.Sleep(time.Second)
	}

	// (c) only for the command that ended last, and only when the other ended clearly before it:
	// a process's last write precedes its exit by the time it takes to print its report (longer
	// when the machine is loaded), so within that margin the record may hold either command's work.
	const margin = 500 * time.Millisecond
	last := results[len(results)-1]
	alone := len(results) == 1 || last.end.Sub(results[len(results)-2].end) > margin
	switch {
	case last.outcome != outcomeOK:
	case !alone:
		r.t.Logf("round %s: (c) not checked: the other command ended %s before", r.roundName(), last.end.Sub(results[len(results)-2].end).Round(time.Millisecond))
	case last.cmd.verb == "apply":
		r.checkApplied(ctx, last)
	case last.cmd.verb == "delete":
		r.checkDeleted(ctx, last)
	}
	if snapshot != nil {
		r.checkUnchanged(ctx, snapshot, results[0])
	}
	r.checkRecordMatchesCluster(ctx)
	r.checkBystanders(ctx)
	return results
}

// handleStaleLock deals with the lock a SIGKILLed command left: its claim lasts until it expires
// (30 s after the last renewal). The first time in a run the next command waits it out with
// --wait-lock, which proves that a dead holder blocks for a bounded time and that the next command
// finishes its work; later, the test removes the Lease by hand, as a person who knows the holder
// is dead would, so that the rounds keep testing the record rather than the wait.
func (r *chaosRun) handleStaleLock(ctx context.Context, cmds []chaosCommand) {
	lease := &coordinationv1.Lease{}
	err := r.c.Get(ctx, client.ObjectKey{Namespace: chaosNamespace, Name: "kubectl-fluxinstance-lock"}, lease)
	switch {
	case apierrors.IsNotFound(err):
		return
	case err != nil:
		r.fatalf("reading the lock: %v", err)
	case cmds[0].restricted:
		return // refused before it would take the lock
	case !r.waitedOutLock:
		r.waitedOutLock = true
		cmds[0].waitLock = true
		r.t.Logf("round %s: a killed command left the lock held by %s; %s waits it out", r.roundName(), lease.Annotations["kubectl-fluxinstance/command"], cmds[0])
	default:
		if err := r.c.Delete(ctx, lease); err != nil && !apierrors.IsNotFound(err) {
			r.fatalf("removing the lock a killed command left: %v", err)
		}
	}
}

// classify names how a command ended; outcomeFailed is the only outcome that fails the test by
// itself (the checks decide whether an exit 0 did its work).
func classify(res chaosResult, recordExisted bool) string {
	out := res.output
	switch {
	case strings.Contains(out, "panic:") || strings.Contains(out, "fatal error:"):
		return outcomeFailed
	case res.timedOut:
		return outcomeFailed
	case res.code == 0 && !res.signaled:
		return outcomeOK
	case strings.Contains(out, "locked by"):
		return outcomeLocked
	case res.sent && (res.signaled || res.code == 130 || strings.Contains(out, "interrupted") || strings.Contains(out, "context canceled")):
		return outcomeInterrupted
	case res.cmd.restricted && strings.Contains(out, "forbidden") && strings.Contains(out, `"configmaps"`):
		return outcomeRefused
	case res.cmd.verb == "delete" && !recordExisted && strings.Contains(out, "nothing to delete"):
		return outcomeNothingToDelete
	}
	return outcomeFailed
}

// run runs the plugin binary directly (not through kubectl) so that the test's signal reaches it.
func (r *chaosRun) run(ctx context.Context, cmd chaosCommand) chaosResult {
	kubeconfig := r.env.Kubeconfig
	if cmd.restricted {
		kubeconfig = r.restrictedKC
	}
	args := []string{cmd.verb, "--kubeconfig=" + kubeconfig}
	if cmd.verb == "apply" {
		// No kubelet runs here: Deployments never become ready, so nothing waits for them.
		args = append(args, "-f", r.instanceFile(cmd.components), "--distribution", r.dist, "--wait=false")
	}
	if cmd.waitLock {
		args = append(args, "--wait-lock=2m")
	}
	// A hung command is a failure, not a reason to hang the test for go test's whole timeout
	// (above --wait-lock's 2m, so that the final apply may wait out a lock a killed apply left).
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	ex := exec.CommandContext(ctx, r.bin, args...)
	ex.Env = append(os.Environ(), "KUBECACHEDIR="+filepath.Join(r.dir, "kube-cache"))
	var out bytes.Buffer
	ex.Stdout, ex.Stderr = &out, &out
	// Never outlive the test.
	ex.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	res := chaosResult{cmd: cmd, start: time.Now()}
	if err := ex.Start(); err != nil {
		res.end, res.code, res.output = time.Now(), -1, "starting the plugin: "+err.Error()
		return res
	}
	waited := make(chan error, 1)
	go func() { waited <- ex.Wait() }()
	var err error
	if cmd.signal != 0 {
		timer := time.NewTimer(cmd.delay)
		select {
		case err = <-waited:
			timer.Stop()
		case <-timer.C:
			res.sent = ex.Process.Signal(cmd.signal) == nil
			err = <-waited
		}
	} else {
		err = <-waited
	}
	res.end, res.output = time.Now(), out.String()
	res.timedOut = ctx.Err() != nil
	if res.timedOut {
		res.output += "\n(the test killed the command: still running after 3m)"
	}
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		res.code = exit.ExitCode()
		if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			res.signaled = true
		}
	default:
		res.code = -1
		res.output += "\n" + err.Error()
	}
	return res
}

// instanceFile writes (once) the FluxInstance of a component set and returns its path.
func (r *chaosRun) instanceFile(components []string) string {
	path := filepath.Join(r.dir, strings.Join(components, "+")+".yaml")
	if _, err := os.Stat(path); err == nil {
		return path
	}
	doc := fmt.Sprintf(`apiVersion: fluxcd.controlplane.io/v1
kind: FluxInstance
metadata:
  name: flux
  namespace: %s
spec:
  distribution:
    version: %q
    registry: ghcr.io/fluxcd
  components: [%s]
`, chaosNamespace, chaosFluxVersion, strings.Join(components, ", "))
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		r.fatalf("%v", err)
	}
	return path
}

// render returns the objects of a component set's rendering, from `kubectl fluxinstance build`.
func (r *chaosRun) render(ctx context.Context, components []string) []unstructured.Unstructured {
	r.t.Helper()
	out, err := exec.CommandContext(ctx, r.bin, "build", "-f", r.instanceFile(components), "--distribution", r.dist, "-o", "json").Output()
	if err != nil {
		var stderr []byte
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			stderr = exit.Stderr
		}
		r.fatalf("build %v: %v\n%s", components, err, stderr)
	}
	var list unstructured.UnstructuredList
	if err := list.UnmarshalJSON(out); err != nil {
		r.fatalf("build %v printed no List: %v", components, err)
	}
	return list.Items
}

// renderingIDs are the record ids (<ns>_<name>_<group>_<kind>) of a component set's rendering.
func (r *chaosRun) renderingIDs(ctx context.Context, components []string) map[string]bool {
	key := strings.Join(components, "+")
	if ids, ok := r.renderings[key]; ok {
		return ids
	}
	ids := map[string]bool{}
	for _, o := range r.render(ctx, components) {
		ids[objectID(o.GroupVersionKind().Group, o.GetKind(), o.GetNamespace(), o.GetName())] = true
	}
	r.renderings[key] = ids
	return ids
}

// renderKinds renders every component and returns the kinds found.
func (r *chaosRun) renderKinds(ctx context.Context) []schema.GroupVersionKind {
	all := append([]string{"source-controller"}, chaosComponents()...)
	var kinds []schema.GroupVersionKind
	for _, o := range r.render(ctx, all) {
		if gvk := o.GroupVersionKind(); !slices.Contains(kinds, gvk) {
			kinds = append(kinds, gvk)
		}
	}
	return kinds
}

func objectID(group, kind, namespace, name string) string {
	return namespace + "_" + name + "_" + group + "_" + kind
}

// chaosRecordData is the record as docs/inventory.md describes it.
type chaosRecordData struct {
	exists          bool
	state, user     string
	entries         map[string]bool
	resourceVersion string
}

func (r *chaosRun) readRecord(ctx context.Context) chaosRecordData {
	r.t.Helper()
	cm := &unstructured.Unstructured{}
	cm.SetAPIVersion("v1")
	cm.SetKind("ConfigMap")
	err := r.c.Get(ctx, client.ObjectKey{Namespace: chaosNamespace, Name: chaosRecord}, cm)
	if client.IgnoreNotFound(err) != nil {
		r.fatalf("reading the record: %v", err)
	}
	if err != nil {
		return chaosRecordData{}
	}
	data, _, _ := unstructured.NestedStringMap(cm.Object, "data")
	rec := chaosRecordData{exists: true, state: data["state"], user: data["user"], entries: map[string]bool{}, resourceVersion: cm.GetResourceVersion()}
	var inv struct {
		Entries []struct {
			ID string `json:"id"`
			V  string `json:"v"`
		} `json:"entries"`
	}
	if err := json.Unmarshal([]byte(data["inventory"]), &inv); err != nil {
		r.errorf("(a) the record's inventory is not the documented JSON: %v: %q", err, data["inventory"])
	}
	for _, e := range inv.Entries {
		if e.V == "" {
			r.errorf("(a) record entry %s has no version", e.ID)
		}
		rec.entries[e.ID] = true
	}
	return rec
}

// labelled lists, across all namespaces, the objects of every kind the rendering can produce that
// carry the instance's owner labels, without the bystanders and objects already being deleted
// (a pruned CRD waits a moment for its finalizer), by id with their UID.
func (r *chaosRun) labelled(ctx context.Context) map[string]string {
	r.t.Helper()
	out := map[string]string{}
	for _, gvk := range r.kinds {
		list := &unstructured.UnstructuredList{}
		list.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
		if err := r.c.List(ctx, list, client.MatchingLabels{labelOwnerName: "flux", labelOwnerNS: chaosNamespace}); err != nil {
			r.fatalf("listing %s: %v", gvk.Kind, err)
		}
		for _, o := range list.Items {
			id := objectID(gvk.Group, gvk.Kind, o.GetNamespace(), o.GetName())
			if o.GetDeletionTimestamp() != nil || r.isBystander(id) ||
				(o.GetNamespace() == chaosNamespace && (o.GetName() == chaosRecord || o.GetName() == chaosMigration)) {
				continue
			}
			out[id] = string(o.GetUID())
		}
	}
	return out
}

// checkRecordMatchesCluster is (a): an Applied or Deleted record lists exactly the labelled
// objects; a Pending one (an interrupted apply) at least them, its entries being the union of
// two renderings; without a record nothing is labelled.
func (r *chaosRun) checkRecordMatchesCluster(ctx context.Context) {
	r.t.Helper()
	rec, labelled := r.readRecord(ctx), r.labelled(ctx)
	unrecorded, missing := difference(labelled, rec.entries), difference(rec.entries, labelled)
	switch {
	case !rec.exists:
		if len(labelled) > 0 {
			r.errorf("(a) no record, yet %d objects carry the owner labels: %v", len(labelled), sortedKeys(labelled))
		}
	case rec.state == statePending:
		if len(unrecorded) > 0 {
			r.errorf("(a) the Pending record lists %d objects, but %d labelled objects are not among them: %v", len(rec.entries), len(unrecorded), unrecorded)
		}
	case rec.state == stateApplied || rec.state == stateDeleted:
		if len(unrecorded) > 0 || len(missing) > 0 {
			r.errorf("(a) the %s record lists %d objects while %d labelled objects exist; labelled but not recorded: %v; recorded but absent: %v",
				rec.state, len(rec.entries), len(labelled), unrecorded, missing)
		}
	default:
		r.errorf("(a) the record's state is %q, not one of Applied, Pending, Deleted", rec.state)
	}
}

// checkApplied is (c) for an apply that exited 0 with no other command running: its record is
// written (Applied, by its user, listing its rendering) and every object of its rendering exists.
func (r *chaosRun) checkApplied(ctx context.Context, res chaosResult) {
	r.t.Helper()
	want := r.renderingIDs(ctx, res.cmd.components)
	rec, labelled := r.readRecord(ctx), r.labelled(ctx)
	user := chaosAdmin
	if res.cmd.restricted {
		user = chaosNoConfigMaps
	}
	var absent []string
	for id := range want {
		if _, ok := labelled[id]; !ok {
			absent = append(absent, id)
		}
	}
	slices.Sort(absent)
	if rec.state != stateApplied || rec.user != user || len(absent) > 0 || !mapsEqual(rec.entries, want) {
		r.errorf("(c) %s exited 0 with its work undone: record state %q (want %q), user %q (want %q), %d entries for %d rendered objects (extra %v, missing %v); rendered objects absent from the cluster: %v\n%s",
			res, rec.state, stateApplied, rec.user, user, len(rec.entries), len(want),
			difference(rec.entries, want), difference(want, rec.entries), absent, testenv.Last(res.output, 2000))
	}
}

// checkDeleted is (c) for a delete that exited 0: the record says Deleted and only the Namespace
// and the CRDs (kept without --with-crds) still carry the owner labels.
func (r *chaosRun) checkDeleted(ctx context.Context, res chaosResult) {
	r.t.Helper()
	rec := r.readRecord(ctx)
	var left []string
	for id := range r.labelled(ctx) {
		if !strings.HasSuffix(id, "__Namespace") && !strings.HasSuffix(id, "_apiextensions.k8s.io_CustomResourceDefinition") {
			left = append(left, id)
		}
	}
	slices.Sort(left)
	if rec.state != stateDeleted || len(left) > 0 {
		r.errorf("(c) %s exited 0 with its work undone: record state %q (want %q); still labelled: %v\n%s",
			res, rec.state, stateDeleted, left, testenv.Last(res.output, 2000))
	}
}

// snapshot is the record's resourceVersion and the labelled objects' UIDs: what a refused
// command must not change.
func (r *chaosRun) snapshot(ctx context.Context) map[string]string {
	s := r.labelled(ctx)
	s["record resourceVersion"] = r.readRecord(ctx).resourceVersion
	return s
}

func (r *chaosRun) checkUnchanged(ctx context.Context, before map[string]string, res chaosResult) {
	r.t.Helper()
	after := r.snapshot(ctx)
	if mapsEqual(before, after) {
		return
	}
	var changed []string
	for k, v := range before {
		if after[k] != v {
			changed = append(changed, k)
		}
	}
	for k := range after {
		if _, ok := before[k]; !ok {
			changed = append(changed, k)
		}
	}
	slices.Sort(changed)
	r.errorf("%s changed the installation though it ended %q: %v", res, res.outcome, changed)
}

// difference lists, sorted, the keys of a that b lacks.
func difference[A, B any](a map[string]A, b map[string]B) []string {
	var out []string
	for k := range a {
		if _, ok := b[k]; !ok {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

func mapsEqual[V comparable](a, b map[string]V) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
