package plugin

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/fluxinstance/kubectl-fluxinstance/test/fixtures"
	"github.com/fluxinstance/kubectl-fluxinstance/test/testenv"
)

// syncInstance is a small pinned instance with the given sync (and optional extra spec lines): the
// tests build each sync variant here, next to the warning it must cause.
func syncInstance(t *testing.T, sync string, extra ...string) string {
	t.Helper()
	return fixtures.Instance(t, "tests/source-kustomize-2.7.5") + "  sync:\n" + indent(sync, "    ") + strings.Join(extra, "")
}

func indent(s, prefix string) string {
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		b.WriteString(prefix + strings.TrimSpace(l) + "\n")
	}
	return b.String()
}

// createRawSecret makes a Secret the way a user might by hand, with the given keys.
func createRawSecret(t *testing.T, c client.Client, name string, typ corev1.SecretType, keys ...string) {
	t.Helper()
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "flux-system"}, Type: typ, Data: map[string][]byte{}}
	for _, k := range keys {
		s.Data[k] = []byte("value-of-" + k)
	}
	_ = c.Delete(context.Background(), s)
	require.NoError(t, c.Create(context.Background(), s))
}

var backticked = regexp.MustCompile("`(" + regexp.QuoteMeta(CommandName) + " create secret [^`]+)`")

// fixCommand extracts the `create secret` command from a warning and fills in its placeholders
// with test values, returning the arguments after "kubectl fluxinstance" and the stdin.
func fixCommand(t *testing.T, stderr string, fx *secretFixtures) ([]string, string) {
	t.Helper()
	m := backticked.FindStringSubmatch(stderr)
	require.NotNil(t, m, "no create secret command in:\n%s", stderr)
	replacer := strings.NewReplacer(
		"USERNAME", "flux", "APP_ID", "12345", "INSTALLATION_ID", "678", "ACCESS_KEY", "AKIAFIXTURE",
		"PRIVATE_KEY_FILE", fx.appKeyFile, "KNOWN_HOSTS_FILE", fx.knownHostsFile,
	)
	cmd := replacer.Replace(strings.TrimPrefix(m[1], CommandName+" "))
	if strings.Contains(cmd, "create secret git ") && strings.Contains(cmd, "--private-key-file") {
		cmd = strings.Replace(cmd, fx.appKeyFile, fx.sshKeyFile, 1)
	}
	stdin := ""
	if strings.Contains(cmd, "-stdin") {
		stdin = fx.token
	}
	return strings.Fields(cmd), stdin
}

func TestPreflight(t *testing.T) {
	dist := testenv.DistributionDir(t)
	env := testenv.Start(t)
	c := env.Client(t)
	env.CreateNamespace(t, "flux-system")
	fx := newSecretFixtures(t)
	dir := t.TempDir()
	kc := "--kubeconfig=" + env.Kubeconfig

	// check runs the preflight through a client-side dry-run apply, which changes nothing.
	check := func(t *testing.T, instance string, extra ...string) result {
		t.Helper()
		file := writeFile(t, dir, "flux.yaml", instance)
		return runPlugin(t, "", append([]string{"apply", "-f", file, "--dry-run=client", kc, "--distribution", dist}, extra...)...)
	}
	// passes asserts the preflight has nothing to warn about, even with --strict.
	passes := func(t *testing.T, instance string) result {
		t.Helper()
		r := check(t, instance, "--strict")
		require.Equal(t, 0, r.Code, r.Stderr)
		assert.NotContains(t, r.Stderr, "Warning:")
		return r
	}
	httpsSync := "kind: GitRepository\nurl: https://github.com/example/fleet.git\nref: refs/heads/main\npath: clusters/test\npullSecret: flux-system"

	t.Run("pull secret missing: a warning with the command that fixes it", func(t *testing.T) {
		before := resourceVersions(t, c)
		r := check(t, syncInstance(t, httpsSync))
		require.Equal(t, 0, r.Code, r.Stderr)
		assert.Contains(t, r.Stderr, "Warning: Secret flux-system/flux-system (sync.pullSecret) does not exist, so the GitRepository cannot authenticate: "+
			"create it with `kubectl fluxinstance create secret git flux-system -n flux-system --url=https://github.com/example/fleet.git --username=USERNAME --password-stdin`\n")

		r = check(t, syncInstance(t, httpsSync), "--strict")
		assert.Equal(t, 1, r.Code)
		assert.Contains(t, r.Stderr, "error: --strict: the sync preflight found 1 problem(s)")
		assert.Empty(t, r.Stdout, "--strict stops before the apply")
		assert.Equal(t, before, resourceVersions(t, c))

		// diff runs it too, and --strict makes it an error (exit 2, like every diff error).
		file := writeFile(t, dir, "flux.yaml", syncInstance(t, httpsSync))
		r = runPlugin(t, "", "diff", "-f", file, kc, "--distribution", dist, "--strict")
		assert.Equal(t, 2, r.Code)
		assert.Contains(t, r.Stderr, "Warning: Secret flux-system/flux-system (sync.pullSecret) does not exist")

		// The printed command fixes it.
		args, stdin := fixCommand(t, r.Stderr, fx)
		fix := runPlugin(t, stdin, append(args, kc)...)
		require.Equal(t, 0, fix.Code, fix.Stderr)
		passes(t, syncInstance(t, httpsSync))
	})

	t.Run("pull secret lacks keys: the missing key names", func(t *testing.T) {
		createRawSecret(t, c, "partial", corev1.SecretTypeOpaque, "username")
		r := check(t, syncInstance(t, strings.Replace(httpsSync, "pullSecret: flux-system", "pullSecret: partial", 1)))
		require.Equal(t, 0, r.Code, r.Stderr)
		assert.Contains(t, r.Stderr, "Warning: Secret flux-system/partial lacks the keys password that a GitRepository needs (it needs username and password, or bearerToken): recreate it with `kubectl fluxinstance create secret git partial -n flux-system")
		assert.NotContains(t, r.Stderr, "value-of-username")

		createRawSecret(t, c, "app-partial", corev1.SecretTypeOpaque, "githubAppID", "ca.crt")
		r = check(t, syncInstance(t, "kind: GitRepository\nprovider: github\nurl: https://github.com/example/fleet.git\nref: refs/heads/main\npath: p\npullSecret: app-partial"))
		assert.Contains(t, r.Stderr, "Warning: Secret flux-system/app-partial lacks the keys githubAppInstallationID, githubAppPrivateKey that a GitRepository with provider github needs")

		createRawSecret(t, c, "oci-opaque", corev1.SecretTypeOpaque, ".dockerconfigjson")
		r = check(t, syncInstance(t, "kind: OCIRepository\nurl: oci://ghcr.io/example/fleet\nref: latest\npath: p\npullSecret: oci-opaque"))
		assert.Contains(t, r.Stderr, "Warning: Secret flux-system/oci-opaque is of type Opaque, but a OCIRepository needs type kubernetes.io/dockerconfigjson: recreate it with `kubectl fluxinstance create secret oci oci-opaque -n flux-system --url=ghcr.io --username=USERNAME --password-stdin`")

		createRawSecret(t, c, "bucket-partial", corev1.SecretTypeOpaque, "secretkey")
		r = check(t, syncInstance(t, "kind: Bucket\nurl: minio.example.com\nref: fleet\npath: p\npullSecret: bucket-partial"))
		assert.Contains(t, r.Stderr, "Warning: Secret flux-system/bucket-partial lacks the keys accesskey that a Bucket needs")
	})

	t.Run("provider github with a URL that is not GitHub", func(t *testing.T) {
		createRawSecret(t, c, "gh-app", corev1.SecretTypeOpaque, "githubAppID", "githubAppInstallationID", "githubAppPrivateKey")
		sync := "kind: GitRepository\nprovider: github\nurl: https://gitlab.com/example/fleet.git\nref: refs/heads/main\npath: p\npullSecret: gh-app"
		r := check(t, syncInstance(t, sync))
		require.Equal(t, 0, r.Code, r.Stderr)
		assert.Contains(t, r.Stderr, "Warning: sync.provider github is for repositories on GitHub, but sync.url https://gitlab.com/example/fleet.git is on gitlab.com")

		// A GitHub Enterprise Server (githubAppBaseURL in the Secret) may be on any host.
		createRawSecret(t, c, "gh-app", corev1.SecretTypeOpaque, "githubAppID", "githubAppInstallationID", "githubAppPrivateKey", "githubAppBaseURL")
		passes(t, syncInstance(t, sync))
	})

	t.Run("provider azure without the workload identity patches", func(t *testing.T) {
		sync := "kind: GitRepository\nprovider: azure\nurl: https://dev.azure.com/org/project/_git/fleet\nref: refs/heads/main\npath: p"
		r := check(t, syncInstance(t, sync))
		require.Equal(t, 0, r.Code, r.Stderr)
		assert.Contains(t, r.Stderr, "Warning: sync.provider azure authenticates with Azure Workload Identity, but the rendered source-controller lacks the ServiceAccount annotation azure.workload.identity/client-id and the pod label azure.workload.identity/use: \"true\"")

		// Only the label: the annotation is still reported.
		labelOnly := `  kustomize:
    patches:
      - target:
          kind: Deployment
          name: source-controller
        patch: |
          - op: add
            path: /spec/template/metadata/labels/azure.workload.identity~1use
            value: "true"
`
		r = check(t, syncInstance(t, sync, labelOnly))
		assert.Contains(t, r.Stderr, "lacks the ServiceAccount annotation azure.workload.identity/client-id: add them")
	})

	t.Run("provider aws with an OCI or Bucket source: one reminder, not a warning", func(t *testing.T) {
		for _, sync := range []string{
			"kind: OCIRepository\nprovider: aws\nurl: oci://123456789012.dkr.ecr.eu-west-1.amazonaws.com/fleet\nref: latest\npath: p",
			"kind: Bucket\nprovider: aws\nurl: s3.amazonaws.com\nref: fleet\npath: p",
		} {
			r := passes(t, syncInstance(t, sync))
			assert.Equal(t, 1, strings.Count(r.Stderr, "Note: sync.provider aws"), r.Stderr)
			assert.Contains(t, r.Stderr, "needs an EKS Pod Identity association")
		}
	})

	t.Run("an HTTPS URL with an SSH key Secret, and the reverse", func(t *testing.T) {
		createRawSecret(t, c, "ssh-key", corev1.SecretTypeOpaque, "identity", "identity.pub", "known_hosts")
		r := check(t, syncInstance(t, strings.Replace(httpsSync, "pullSecret: flux-system", "pullSecret: ssh-key", 1)))
		require.Equal(t, 0, r.Code, r.Stderr)
		assert.Contains(t, r.Stderr, "Warning: sync.url https://github.com/example/fleet.git is an HTTPS URL, but Secret flux-system/ssh-key holds an SSH key (identity), which only works with an ssh:// URL")
		assert.NotContains(t, r.Stderr, "lacks the keys")

		createRawSecret(t, c, "basic-auth", corev1.SecretTypeOpaque, "username", "password")
		r = check(t, syncInstance(t, "kind: GitRepository\nurl: ssh://git@github.com/example/fleet.git\nref: refs/heads/main\npath: p\npullSecret: basic-auth"))
		assert.Contains(t, r.Stderr, "Warning: sync.url ssh://git@github.com/example/fleet.git is an SSH URL, but Secret flux-system/basic-auth holds a username/password (or token), which only works with an https:// URL")

		passes(t, syncInstance(t, "kind: GitRepository\nurl: ssh://git@github.com/example/fleet.git\nref: refs/heads/main\npath: p\npullSecret: ssh-key"))
	})

	t.Run("a source that needs a Secret but names none", func(t *testing.T) {
		r := check(t, syncInstance(t, "kind: GitRepository\nurl: ssh://git@github.com/example/fleet.git\nref: refs/heads/main\npath: p"))
		assert.Contains(t, r.Stderr, "Warning: sync.pullSecret is empty, but an SSH URL needs a private key and known hosts from that Secret: create the Secret with `kubectl fluxinstance create secret git flux-system -n flux-system --url=ssh://git@github.com/example/fleet.git --private-key-file=PRIVATE_KEY_FILE --known-hosts-file=KNOWN_HOSTS_FILE` and set sync.pullSecret: flux-system")
		// A public HTTPS repository needs none.
		passes(t, syncInstance(t, "kind: GitRepository\nurl: https://github.com/example/public.git\nref: refs/heads/main\npath: p"))
	})

	t.Run("a user who may not get Secrets gets a one-line note", func(t *testing.T) {
		file := writeFile(t, dir, "flux.yaml", syncInstance(t, httpsSync))
		r := runPlugin(t, "", "diff", "-f", file, "--kubeconfig="+env.UserKubeconfig(t, "no-secrets"), "--distribution", dist)
		var notes []string
		for _, l := range strings.Split(r.Stderr, "\n") {
			if strings.Contains(l, "Secret") {
				notes = append(notes, l)
			}
		}
		assert.Equal(t, []string{"Note: skipped checking the sync credentials: not allowed to get Secret flux-system/flux-system"}, notes, r.Stderr)
	})

	t.Run("the examples pass once their secrets exist", func(t *testing.T) {
		examples, err := filepath.Glob(filepath.Join("..", "examples", "*.yaml"))
		require.NoError(t, err)
		require.Len(t, examples, 6)
		for _, ex := range examples {
			t.Run(filepath.Base(ex), func(t *testing.T) {
				data, err := os.ReadFile(ex)
				require.NoError(t, err)
				r := check(t, string(data))
				require.Equal(t, 0, r.Code, r.Stderr)
				if strings.Contains(r.Stderr, "Warning: Secret") {
					// Create what the warning says, with the command it prints.
					require.NoError(t, c.DeleteAllOf(context.Background(), &corev1.Secret{}, client.InNamespace("flux-system")))
					args, stdin := fixCommand(t, r.Stderr, fx)
					fix := runPlugin(t, stdin, append(args, kc)...)
					require.Equal(t, 0, fix.Code, fix.Stderr)
				}
				passes(t, string(data))
			})
		}
	})
}

func TestPreflightMigrate(t *testing.T) {
	env := testenv.Start(t)
	dist := testenv.DistributionDir(t)
	objs := bootstrapForPlugin(t, env)
	c := env.Client(t)
	kc := "--kubeconfig=" + env.Kubeconfig

	r := runPlugin(t, "", "migrate", kc, "--dry-run", "--distribution", dist)
	require.Equal(t, 0, r.Code, r.Stderr)
	assert.Contains(t, r.Stderr, "Warning: Secret flux-system/flux-system (sync.pullSecret) does not exist, so the GitRepository cannot authenticate: "+
		"create it with `kubectl fluxinstance create secret git flux-system -n flux-system --url=https://example.com/fleet.git --username=USERNAME --password-stdin`")

	before := testenv.ResourceVersions(t, c, objs)
	r = runPlugin(t, "", "migrate", kc, "--yes", "--strict", "--distribution", dist)
	assert.Equal(t, 1, r.Code, r.Stderr)
	assert.Contains(t, r.Stderr, "error: --strict: the sync preflight found 1 problem(s)")
	assert.Equal(t, before, testenv.ResourceVersions(t, c, objs), "--strict must stop migrate before any change")
}
