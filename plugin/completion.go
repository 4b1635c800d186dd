package plugin

import (
	"context"
	"errors"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/metadata"

	"github.com/fluxinstance/kubectl-fluxinstance/render"
	"github.com/fluxinstance/kubectl-fluxinstance/render/distribution"
)

// completionTimeout bounds every cluster request made while completing: a shell waiting on a dead
// context must come back quickly, with no suggestions rather than a hang.
const completionTimeout = 3 * time.Second

// DefaultDistributionArtifact is the Flux Operator's default spec.distribution.artifact, offered
// when completing an oci:// value of --distribution.
const DefaultDistributionArtifact = "oci://ghcr.io/controlplaneio-fluxcd/flux-operator-manifests"

// Resources read to find the namespaces worth offering for -n.
var (
	fluxInstanceGVR = schema.GroupVersionResource{Group: "fluxcd.controlplane.io", Version: "v1", Resource: "fluxinstances"}
	deploymentGVR   = schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}
	namespaceGVR    = schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}
)

// fluxPartOfSelector matches the controllers of every Flux installation: the upstream manifests
// label all their objects app.kubernetes.io/part-of=flux, whoever applied them.
const fluxPartOfSelector = render.LabelPartOf + "=" + render.PartOfValue

// outputChoices finds "One of: (a, b, c)" in a flag's help, the form every -o flag of the plugin
// uses, so completion follows the help text without a second list to keep in sync.
var outputChoices = regexp.MustCompile(`One of: \(([^)]*)\)`)

// registerCompletions wires shell completion into the command tree; call it once every
// sub-command has been added. Completion of a flag or of arguments that a command registered
// itself is left alone. It provides:
//
//   - -n/--namespace: namespaces holding a FluxInstance or the controllers of a Flux
//     installation, or every namespace when the user may not list those;
//   - --context, --cluster, --user: the entries of the kubeconfig; --contexts: the last name of
//     its comma-separated list;
//   - --distribution: .tar.gz/.tgz files and directories, or the default oci:// artifact;
//   - --flux-version (if a command has one): the versions of the embedded distribution;
//   - -f/--filename: YAML and JSON files; -o/--output: the values its help lists;
//   - no file names for the arguments of commands that take none.
func registerCompletions(root *cobra.Command, flags *genericclioptions.ConfigFlags) {
	c := &completer{flags: flags}
	register(root, "namespace", c.namespaces)
	register(root, "context", c.contexts)
	register(root, "cluster", c.clusters)
	register(root, "user", c.users)

	var walk func(cmd *cobra.Command)
	walk = func(cmd *cobra.Command) {
		cmd.LocalNonPersistentFlags().VisitAll(func(f *pflag.Flag) {
			switch {
			case f.Name == "distribution":
				register(cmd, f.Name, completeDistribution)
			case f.Name == "contexts":
				register(cmd, f.Name, lastOfList(c.contexts))
			case f.Name == "mode":
				register(cmd, f.Name, cobra.FixedCompletions([]cobra.Completion{modeAuto, modeDirect, modeOperator}, cobra.ShellCompDirectiveNoFileComp))
			case f.Name == "flux-version":
				register(cmd, f.Name, completeFluxVersion)
			case f.Name == "filename":
				register(cmd, f.Name, cobra.FixedCompletions([]cobra.Completion{"yaml", "yml", "json"}, cobra.ShellCompDirectiveFilterFileExt))
			case f.Name == "output":
				if m := outputChoices.FindStringSubmatch(f.Usage); m != nil {
					var choices []string
					for _, s := range strings.Split(m[1], ",") {
						if s = strings.TrimSpace(s); s != "" {
							choices = append(choices, s)
						}
					}
					register(cmd, f.Name, cobra.FixedCompletions(choices, cobra.ShellCompDirectiveNoFileComp))
				}
			}
		})
		if cmd.ValidArgsFunction == nil && len(cmd.ValidArgs) == 0 && !cmd.HasSubCommands() &&
			cmd.Runnable() && cmd.ValidateArgs([]string{"x"}) != nil {
			// The command rejects any argument: offering file names would only mislead.
			cmd.ValidArgsFunction = cobra.NoFileCompletions
		}
		for _, sub := range cmd.Commands() {
			walk(sub)
		}
	}
	walk(root)
}

// lastOfList completes the last item of a comma-separated list with f, keeping the items before.
func lastOfList(f cobra.CompletionFunc) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		done, last := "", toComplete
		if i := strings.LastIndex(toComplete, ","); i >= 0 {
			done, last = toComplete[:i+1], toComplete[i+1:]
		}
		items, directive := f(cmd, args, last)
		for i := range items {
			items[i] = done + items[i]
		}
		return items, directive
	}
}

// register adds a completion function unless the flag is missing or already has one.
func register(cmd *cobra.Command, name string, f cobra.CompletionFunc) {
	if cmd.Flag(name) == nil {
		return
	}
	if _, exists := cmd.GetFlagCompletionFunc(name); exists {
		return
	}
	// Cannot fail: the flag exists and has no completion function yet.
	_ = cmd.RegisterFlagCompletionFunc(name, f)
}

// completer answers completions that need the kubeconfig flags, which cobra has parsed by the time
// a completion function runs, so --kubeconfig and --context typed before the flag are honoured.
type completer struct {
	flags *genericclioptions.ConfigFlags
}

// namespaces offers where a Flux installation or a FluxInstance lives. A user who may not list
// those cluster-wide still gets the namespace names, as kubectl would offer them; an unreachable
// cluster gives no suggestions.
func (c *completer) namespaces(cmd *cobra.Command, _ []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	ctx, cancel := context.WithTimeout(commandContext(cmd), completionTimeout)
	defer cancel()
	cfg, err := c.flags.ToRESTConfig()
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	cfg.Timeout = completionTimeout
	client, err := metadata.NewForConfig(cfg)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}

	found := map[string]bool{}
	answered := false
	for _, q := range []struct {
		gvr      schema.GroupVersionResource
		selector string
	}{
		{fluxInstanceGVR, ""},
		{deploymentGVR, fluxPartOfSelector},
	} {
		list, err := client.Resource(q.gvr).List(ctx, metav1.ListOptions{LabelSelector: q.selector})
		switch {
		case err == nil:
			answered = true
			for _, item := range list.Items {
				found[item.Namespace] = true
			}
		case apierrors.IsNotFound(err): // the FluxInstance CRD is not installed: an answer too
			answered = true
		case !isAPIStatus(err): // no server to ask: do not wait for a second timeout
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
	}
	if !answered {
		list, err := client.Resource(namespaceGVR).List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		for _, item := range list.Items {
			found[item.Name] = true
		}
	}
	names := make([]string, 0, len(found))
	for n := range found {
		names = append(names, n)
	}
	return withPrefix(names, toComplete), cobra.ShellCompDirectiveNoFileComp
}

func isAPIStatus(err error) bool {
	var status apierrors.APIStatus
	return errors.As(err, &status)
}

func (c *completer) contexts(_ *cobra.Command, _ []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	return c.kubeconfigNames(toComplete, func(cfgNames kubeconfigNames) []string { return cfgNames.contexts })
}

func (c *completer) clusters(_ *cobra.Command, _ []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	return c.kubeconfigNames(toComplete, func(cfgNames kubeconfigNames) []string { return cfgNames.clusters })
}

func (c *completer) users(_ *cobra.Command, _ []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	return c.kubeconfigNames(toComplete, func(cfgNames kubeconfigNames) []string { return cfgNames.users })
}

type kubeconfigNames struct{ contexts, clusters, users []string }

func (c *completer) kubeconfigNames(toComplete string, pick func(kubeconfigNames) []string) ([]cobra.Completion, cobra.ShellCompDirective) {
	raw, err := c.flags.ToRawKubeConfigLoader().RawConfig()
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var n kubeconfigNames
	for name := range raw.Contexts {
		n.contexts = append(n.contexts, name)
	}
	for name := range raw.Clusters {
		n.clusters = append(n.clusters, name)
	}
	for name := range raw.AuthInfos {
		n.users = append(n.users, name)
	}
	return withPrefix(pick(n), toComplete), cobra.ShellCompDirectiveNoFileComp
}

// completeDistribution offers what --distribution accepts: the default OCI artifact once the user
// starts typing oci://, otherwise .tar.gz/.tgz files and directories (the shell adds those).
func completeDistribution(_ *cobra.Command, _ []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	if toComplete != "" && (strings.HasPrefix(toComplete, "oci:") || strings.HasPrefix("oci://", toComplete)) {
		// No space: the user usually appends a tag or a digest.
		return withPrefix([]string{DefaultDistributionArtifact}, toComplete), cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveNoSpace
	}
	return []cobra.Completion{"tar.gz", "tgz"}, cobra.ShellCompDirectiveFilterFileExt
}

// completeFluxVersion offers the Flux versions built into the plugin, newest first. Opening the
// embedded distribution only reads its index, so this is cheap.
func completeFluxVersion(cmd *cobra.Command, _ []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	const directive = cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveKeepOrder
	d, err := distribution.Open(commandContext(cmd), "", distribution.Options{Warn: func(string) {}})
	if err != nil { // built without the embedded distribution: nothing to offer
		return nil, directive
	}
	versions := d.Versions()
	slices.Reverse(versions)
	var out []string
	for _, v := range versions {
		if strings.HasPrefix(v, toComplete) || strings.HasPrefix(strings.TrimPrefix(v, "v"), toComplete) {
			out = append(out, v)
		}
	}
	return out, directive
}

func commandContext(cmd *cobra.Command) context.Context {
	if ctx := cmd.Context(); ctx != nil {
		return ctx
	}
	return context.Background()
}

// withPrefix returns the names starting with prefix, sorted.
func withPrefix(names []string, prefix string) []cobra.Completion {
	var out []cobra.Completion
	for _, n := range names {
		if strings.HasPrefix(n, prefix) {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}
