package plugin

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/fluxinstance/kubectl-fluxinstance/render/distribution"
	"github.com/fluxinstance/kubectl-fluxinstance/render/distribution/embedded"
	"github.com/fluxinstance/kubectl-fluxinstance/test/fixtures"
	"github.com/fluxinstance/kubectl-fluxinstance/test/testenv"
)

// completion is what cobra's hidden __complete command printed: the suggestions (descriptions
// dropped) and the directive for the shell.
type completion struct {
	values    []string
	directive cobra.ShellCompDirective
}

// parseCompletion reads __complete's output: one suggestion per line, then ":DIRECTIVE".
func parseCompletion(t *testing.T, stdout string) completion {
	t.Helper()
	lines := strings.Split(strings.TrimRight(stdout, "\n"), "\n")
	last := lines[len(lines)-1]
	require.True(t, strings.HasPrefix(last, ":"), "no directive line in %q", stdout)
	d, err := strconv.Atoi(last[1:])
	require.NoError(t, err)
	var c completion
	c.directive = cobra.ShellCompDirective(d)
	for _, l := range lines[:len(lines)-1] {
		if l != "" {
			c.values = append(c.values, strings.SplitN(l, "\t", 2)[0])
		}
	}
	return c
}

// complete runs the plugin's completion in-process exactly as the shell scripts (and the
// kubectl_complete-fluxinstance helper) call it.
func complete(t *testing.T, args ...string) completion {
	t.Helper()
	r := runPlugin(t, "", append([]string{"__complete"}, args...)...)
	require.Equal(t, 0, r.Code, r.Stderr)
	return parseCompletion(t, r.Stdout)
}

func writeKubeconfig(t *testing.T) string {
	t.Helper()
	cfg := clientcmdapi.NewConfig()
	for _, name := range []string{"prod-eu", "prod-us", "staging"} {
		cfg.Clusters["cluster-"+name] = &clientcmdapi.Cluster{Server: "https://127.0.0.1:1"}
		cfg.AuthInfos["user-"+name] = &clientcmdapi.AuthInfo{Token: "x"}
		cfg.Contexts[name] = &clientcmdapi.Context{Cluster: "cluster-" + name, AuthInfo: "user-" + name}
	}
	cfg.CurrentContext = "staging"
	path := filepath.Join(t.TempDir(), "kubeconfig")
	require.NoError(t, clientcmd.WriteToFile(*cfg, path))
	return path
}

func TestCompletionWithoutCluster(t *testing.T) {
	kubeconfig := writeKubeconfig(t)
	noFiles := cobra.ShellCompDirectiveNoFileComp

	t.Run("contexts, clusters and users come from the kubeconfig", func(t *testing.T) {
		assert.Equal(t, completion{[]string{"prod-eu", "prod-us"}, noFiles},
			complete(t, "--kubeconfig", kubeconfig, "version", "--context", "prod"))
		assert.Equal(t, completion{[]string{"cluster-prod-eu", "cluster-prod-us", "cluster-staging"}, noFiles},
			complete(t, "version", "--kubeconfig", kubeconfig, "--cluster", ""))
		assert.Equal(t, completion{[]string{"user-staging"}, noFiles},
			complete(t, "version", "--kubeconfig", kubeconfig, "--user", "user-s"))
		assert.Equal(t, completion{[]string{"staging,prod-eu", "staging,prod-us"}, noFiles},
			complete(t, "status", "--kubeconfig", kubeconfig, "--contexts", "staging,pr"))
	})

	t.Run("a command without arguments offers no files", func(t *testing.T) {
		c := complete(t, "version", "")
		assert.Empty(t, c.values)
		assert.Equal(t, noFiles, c.directive)
	})

	t.Run("output formats follow the help text", func(t *testing.T) {
		assert.Equal(t, completion{[]string{"json", "yaml"}, noFiles}, complete(t, "version", "-o", ""))
	})

	t.Run("an unreachable cluster gives no namespaces, quickly", func(t *testing.T) {
		start := time.Now()
		c := complete(t, "--kubeconfig", kubeconfig, "version", "-n", "")
		assert.Empty(t, c.values)
		assert.Equal(t, noFiles, c.directive)
		assert.Less(t, time.Since(start), completionTimeout+2*time.Second)
	})

	t.Run("every --distribution flag completes archives and directories", func(t *testing.T) {
		// Whichever commands take --distribution (build, apply, …), they complete alike.
		for _, path := range commandsWithFlag(t, "distribution") {
			args := append(path, "--distribution", "")
			assert.Equal(t, completion{[]string{"tar.gz", "tgz"}, cobra.ShellCompDirectiveFilterFileExt}, complete(t, args...), path)
		}
	})
}

// commandsWithFlag lists the argument paths ("build", …) of the plugin's commands with a flag.
func commandsWithFlag(t *testing.T, flag string) [][]string {
	t.Helper()
	var out bytes.Buffer
	root := NewRootCommand(genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &out}, testBuildInfo)
	var paths [][]string
	var walk func(c *cobra.Command, path []string)
	walk = func(c *cobra.Command, path []string) {
		if c.LocalNonPersistentFlags().Lookup(flag) != nil {
			paths = append(paths, path)
		}
		for _, sub := range c.Commands() {
			walk(sub, append(slices.Clone(path), sub.Name()))
		}
	}
	walk(root, nil)
	return paths
}

// syntheticRoot is a command tree with the flags registerCompletions knows, so that their
// completion is tested whichever sub-commands the plugin has today.
func syntheticRoot(t *testing.T) (*cobra.Command, *bytes.Buffer) {
	t.Helper()
	var out bytes.Buffer
	flags := genericclioptions.NewConfigFlags(true)
	root := &cobra.Command{Use: "fluxinstance", Args: cobra.NoArgs, RunE: func(*cobra.Command, []string) error { return nil }}
	flags.AddFlags(root.PersistentFlags())
	sub := &cobra.Command{Use: "synthetic", Args: cobra.NoArgs, RunE: func(*cobra.Command, []string) error { return nil }}
	sub.Flags().StringSliceP("filename", "f", nil, "")
	sub.Flags().String("distribution", "", "")
	sub.Flags().String("flux-version", "", "")
	sub.Flags().StringP("output", "o", "", "Output format. One of: (yaml, json, name).")
	sub.Flags().String("custom", "", "")
	require.NoError(t, sub.RegisterFlagCompletionFunc("custom", cobra.FixedCompletions([]cobra.Completion{"mine"}, cobra.ShellCompDirectiveNoFileComp)))
	files := &cobra.Command{Use: "files", Args: cobra.ArbitraryArgs, RunE: func(*cobra.Command, []string) error { return nil }}
	root.AddCommand(sub, files)
	registerCompletions(root, flags)
	// A second call must change nothing (and not fail on flags registered already).
	registerCompletions(root, flags)
	root.SetOut(&out)
	root.SetErr(&bytes.Buffer{})
	return root, &out
}

func completeSynthetic(t *testing.T, args ...string) completion {
	t.Helper()
	root, out := syntheticRoot(t)
	root.SetArgs(append([]string{"__complete"}, args...))
	require.NoError(t, root.Execute())
	return parseCompletion(t, out.String())
}

func TestRegisterCompletionsFlags(t *testing.T) {
	fileExt := cobra.ShellCompDirectiveFilterFileExt
	noFiles := cobra.ShellCompDirectiveNoFileComp

	assert.Equal(t, completion{[]string{"yaml", "yml", "json"}, fileExt}, completeSynthetic(t, "synthetic", "-f", ""))
	assert.Equal(t, completion{[]string{"tar.gz", "tgz"}, fileExt}, completeSynthetic(t, "synthetic", "--distribution", "./"))
	for _, typed := range []string{"o", "oci", "oci://", "oci://ghcr.io/controlplaneio"} {
		assert.Equal(t, completion{[]string{DefaultDistributionArtifact}, noFiles | cobra.ShellCompDirectiveNoSpace},
			completeSynthetic(t, "synthetic", "--distribution", typed), typed)
	}
	assert.Empty(t, completeSynthetic(t, "synthetic", "--distribution", "oci://example.com/").values)
	assert.Equal(t, completion{[]string{"yaml", "json", "name"}, noFiles}, completeSynthetic(t, "synthetic", "-o", ""))
	assert.Equal(t, completion{[]string{"mine"}, noFiles}, completeSynthetic(t, "synthetic", "--custom", ""),
		"a completion the command registered itself must win")

	// Arguments: none for a command that takes none; the shell's default for one that takes files.
	c := completeSynthetic(t, "synthetic", "")
	assert.Empty(t, c.values)
	assert.Equal(t, noFiles, c.directive)
	c = completeSynthetic(t, "files", "")
	assert.Equal(t, cobra.ShellCompDirectiveDefault, c.directive)

	t.Run("flux versions come from the embedded distribution", func(t *testing.T) {
		c := completeSynthetic(t, "synthetic", "--flux-version", "")
		assert.Equal(t, noFiles|cobra.ShellCompDirectiveKeepOrder, c.directive)
		if _, err := embedded.Archive(); errors.Is(err, embedded.ErrMissing) {
			assert.Empty(t, c.values, "no embedded distribution, nothing to offer")
			return
		}
		d, err := distribution.Open(context.Background(), "", distribution.Options{})
		require.NoError(t, err)
		want := d.Versions()
		slices.Reverse(want)
		require.NotEmpty(t, want)
		assert.Equal(t, want, c.values, "newest first")

		prefix := strings.TrimPrefix(want[0], "v")[:2] // "2."
		for _, v := range completeSynthetic(t, "synthetic", "--flux-version", prefix).values {
			assert.True(t, strings.HasPrefix(v, "v"+prefix), v)
		}
	})
}

func TestCompletionNamespacesFromCluster(t *testing.T) {
	env := testenv.Start(t)
	ctx := context.Background()
	admin := env.Client(t)

	for _, ns := range []string{"flux-system", "tenant-a", "tenant-b", "unrelated"} {
		env.CreateNamespace(t, ns)
	}

	t.Run("without the FluxInstance CRD, namespaces running Flux", func(t *testing.T) {
		createFluxDeployment(t, admin, "flux-system")
		assert.Equal(t, completion{[]string{"flux-system"}, cobra.ShellCompDirectiveNoFileComp},
			complete(t, "--kubeconfig", env.Kubeconfig, "version", "-n", ""))
	})

	t.Run("namespaces holding a FluxInstance or running Flux", func(t *testing.T) {
		createFluxInstance(t, env, "tenant-a")
		assert.Equal(t, completion{[]string{"flux-system", "tenant-a"}, cobra.ShellCompDirectiveNoFileComp},
			complete(t, "--kubeconfig", env.Kubeconfig, "version", "-n", ""))
		assert.Equal(t, []string{"tenant-a"}, complete(t, "--kubeconfig", env.Kubeconfig, "version", "--namespace", "t").values)
	})

	t.Run("a user who may not list them gets every namespace", func(t *testing.T) {
		role := &rbacv1.ClusterRole{
			ObjectMeta: metav1.ObjectMeta{Name: "list-namespaces"},
			Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"namespaces"}, Verbs: []string{"list"}}},
		}
		require.NoError(t, admin.Create(ctx, role))
		binding := &rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: "bob-list-namespaces"},
			RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: role.Name},
			Subjects:   []rbacv1.Subject{{APIGroup: "rbac.authorization.k8s.io", Kind: "User", Name: "bob"}},
		}
		require.NoError(t, admin.Create(ctx, binding))
		var c completion
		require.Eventually(t, func() bool { // RBAC caches catch up asynchronously
			c = complete(t, "--kubeconfig", env.UserKubeconfig(t, "bob"), "version", "-n", "")
			return len(c.values) > 0
		}, 10*time.Second, 200*time.Millisecond)
		assert.Subset(t, c.values, []string{"default", "flux-system", "tenant-a", "tenant-b", "unrelated"})

		// Nobody can list anything: nothing to offer, and no error on the terminal.
		r := runPlugin(t, "", "__complete", "--kubeconfig", env.UserKubeconfig(t, "alice"), "version", "-n", "")
		require.Equal(t, 0, r.Code, r.Stderr)
		assert.Empty(t, parseCompletion(t, r.Stdout).values)
	})
}

func createFluxDeployment(t *testing.T, c client.Client, namespace string) {
	t.Helper()
	labels := map[string]string{"app": "source-controller"}
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "source-controller", Namespace: namespace, Labels: map[string]string{
			"app.kubernetes.io/part-of": "flux", "app.kubernetes.io/component": "source-controller",
		}},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "manager", Image: "example.invalid/source-controller"}}},
			},
		},
	}
	require.NoError(t, c.Create(context.Background(), d))
	// An unrelated deployment elsewhere must not count.
	other := d.DeepCopy()
	other.Namespace, other.Labels, other.ResourceVersion = "unrelated", map[string]string{"app": "web"}, ""
	require.NoError(t, c.Create(context.Background(), other))
}

func createFluxInstance(t *testing.T, env *testenv.Env, namespace string) {
	t.Helper()
	ctx := context.Background()
	objs, err := testenv.DecodeYAML([]byte(testenv.FluxInstanceStandInCRD))
	require.NoError(t, err)
	require.NoError(t, env.Client(t).Create(ctx, objs[0]))
	instance := fixtures.Object(t, "tests/minimal-2.x")
	instance.SetNamespace(namespace)
	// The CRD is served once established; a fresh client rediscovers the API each attempt.
	require.Eventually(t, func() bool {
		c, err := client.New(env.Config, client.Options{})
		require.NoError(t, err)
		return c.Create(ctx, instance.DeepCopy()) == nil
	}, 20*time.Second, 200*time.Millisecond)
}
