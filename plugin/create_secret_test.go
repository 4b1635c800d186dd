package plugin

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/ssh"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/fluxinstance/kubectl-fluxinstance/test/testenv"
)

// secretFixtures are credentials made up for the tests; their values must never show up in any
// output but --export's stdout.
type secretFixtures struct {
	dir                           string
	password, token, passphrase   string
	bucketSecret                  string
	sshKey, sshKeyProtected       []byte
	sshKeyFile, sshProtectedFile  string
	sshPub                        string
	knownHostsFile                string
	caFile                        string
	appKey                        []byte
	appKeyFile, notPEM, edKeyFile string
}

func newSecretFixtures(t *testing.T) *secretFixtures {
	t.Helper()
	dir := t.TempDir()
	f := &secretFixtures{
		dir:          dir,
		password:     "pa55-Fixture-7f3a9c",
		token:        "ghp_FixtureToken0123456789abcdef",
		passphrase:   "passphrase-Fixture-42b1",
		bucketSecret: "bucket-Fixture-SecretKey-9d8e",
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	block, err := ssh.MarshalPrivateKey(priv, "fixture")
	require.NoError(t, err)
	f.sshKey = pem.EncodeToMemory(block)
	block, err = ssh.MarshalPrivateKeyWithPassphrase(priv, "fixture", []byte(f.passphrase))
	require.NoError(t, err)
	f.sshKeyProtected = pem.EncodeToMemory(block)
	sshPub, err := ssh.NewPublicKey(pub)
	require.NoError(t, err)
	f.sshPub = string(ssh.MarshalAuthorizedKey(sshPub))
	f.sshKeyFile = writeFile(t, dir, "identity", string(f.sshKey))
	f.sshProtectedFile = writeFile(t, dir, "identity-protected", string(f.sshKeyProtected))
	f.edKeyFile = f.sshKeyFile
	f.knownHostsFile = writeFile(t, dir, "known_hosts", "github.com "+f.sshPub)

	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	f.appKey = pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey)})
	f.appKeyFile = writeFile(t, dir, "app.pem", string(f.appKey))
	f.notPEM = writeFile(t, dir, "not-a-key", "this is not a private key\n")

	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "fixture CA"}, IsCA: true,
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, rsaKey.Public(), rsaKey)
	require.NoError(t, err)
	f.caFile = writeFile(t, dir, "ca.crt", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	return f
}

// secretValues are the strings that must not leak: the plain values, and distinctive lines of the
// PEM keys (each line of base64 would identify the key).
func (f *secretFixtures) secretValues() []string {
	values := []string{f.password, f.token, f.passphrase, f.bucketSecret,
		base64.StdEncoding.EncodeToString([]byte("flux:" + f.token))}
	for _, key := range [][]byte{f.sshKey, f.sshKeyProtected, f.appKey} {
		lines := strings.Split(strings.TrimSpace(string(key)), "\n")
		values = append(values, lines[1], lines[len(lines)-2])
	}
	return values
}

func getSecret(t *testing.T, c client.Client, ns, name string) *corev1.Secret {
	t.Helper()
	s := &corev1.Secret{}
	require.NoError(t, c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, s))
	return s
}

func secretKeys(s *corev1.Secret) []string {
	var keys []string
	for k := range s.Data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func assertNoSecret(t *testing.T, c client.Client, ns, name string) {
	t.Helper()
	err := c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, &corev1.Secret{})
	assert.True(t, apierrors.IsNotFound(err), "Secret %s/%s must not exist: %v", ns, name, err)
}

func TestCreateSecret(t *testing.T) {
	env := testenv.Start(t)
	c := env.Client(t)
	ctx := context.Background()
	env.CreateNamespace(t, "apps")
	fx := newSecretFixtures(t)
	kc := "--kubeconfig=" + env.Kubeconfig

	// Every command's output, to grep for the secret values at the end.
	type run struct {
		args   []string
		export bool
		r      result
	}
	var runs []run
	plugin := func(stdin string, args ...string) result {
		t.Helper()
		r := runPlugin(t, stdin, append(append([]string{"create", "secret"}, args...), kc)...)
		runs = append(runs, run{args: args, export: strings.Contains(strings.Join(args, " "), "--export"), r: r})
		return r
	}
	// applied runs a command twice: created, then unchanged (re-runs are idempotent).
	applied := func(t *testing.T, ns, name, stdin string, args ...string) *corev1.Secret {
		t.Helper()
		r := plugin(stdin, args...)
		require.Equal(t, 0, r.Code, r.Stderr)
		assert.Equal(t, "secret/"+name+" created\n", r.Stdout)
		first := getSecret(t, c, ns, name)
		r = plugin(stdin, args...)
		require.Equal(t, 0, r.Code, r.Stderr)
		assert.Equal(t, "secret/"+name+" unchanged\n", r.Stdout)
		second := getSecret(t, c, ns, name)
		assert.Equal(t, first.ResourceVersion, second.ResourceVersion)
		assert.Contains(t, managers(second), "kubectl-fluxinstance")
		return second
	}
	// exported checks that --export prints what the apply created and that kubectl applies it.
	exported := func(t *testing.T, want *corev1.Secret, stdin string, args ...string) {
		t.Helper()
		exportName := want.Name + "-export"
		args = append([]string{args[0], exportName}, args[2:]...)
		r := plugin(stdin, append(args, "--export")...)
		require.Equal(t, 0, r.Code, r.Stderr)
		assert.Contains(t, r.Stdout, "stringData:")
		assertNoSecret(t, c, want.Namespace, exportName)
		file := writeFile(t, t.TempDir(), "secret.yaml", r.Stdout)
		out, err := env.Kubectl(ctx, nil, "apply", "-f", file)
		require.NoError(t, err, string(out))
		got := getSecret(t, c, want.Namespace, exportName)
		assert.Equal(t, want.Type, got.Type)
		assert.Equal(t, want.Data, got.Data)
	}

	t.Run("git over HTTPS with the password on stdin", func(t *testing.T) {
		args := []string{"git", "git-https", "-n", "apps", "--url=https://github.com/org/fleet.git", "--username=flux", "--password-stdin", "--ca-file", fx.caFile}
		s := applied(t, "apps", "git-https", fx.token+"\n", args...)
		assert.Equal(t, corev1.SecretTypeOpaque, s.Type)
		assert.Equal(t, []string{"ca.crt", "password", "username"}, secretKeys(s))
		assert.Equal(t, fx.token, string(s.Data["password"]))
		assert.Equal(t, "flux", string(s.Data["username"]))
		exported(t, s, fx.token+"\n", args...)
	})

	t.Run("git over HTTPS with --password, in the context namespace", func(t *testing.T) {
		r := plugin("", "git", "git-flag", "--url=https://gitlab.com/org/fleet.git", "--username=flux", "--password", fx.password)
		require.Equal(t, 0, r.Code, r.Stderr)
		assert.Contains(t, r.Stderr, "Warning: --password on the command line is visible in shell history")
		s := getSecret(t, c, "default", "git-flag")
		assert.Equal(t, fx.password, string(s.Data["password"]))
	})

	t.Run("git over SSH", func(t *testing.T) {
		args := []string{"git", "git-ssh", "-n", "apps", "--url=ssh://git@github.com/org/fleet.git", "--private-key-file", fx.sshKeyFile, "--known-hosts-file", fx.knownHostsFile}
		s := applied(t, "apps", "git-ssh", "", args...)
		assert.Equal(t, []string{"identity", "identity.pub", "known_hosts"}, secretKeys(s))
		assert.Equal(t, fx.sshKey, s.Data["identity"])
		assert.Equal(t, fx.sshPub, string(s.Data["identity.pub"]))
		assert.Equal(t, "github.com "+fx.sshPub, string(s.Data["known_hosts"]))
		assert.Contains(t, runs[len(runs)-1].r.Stderr, "Deploy key (add it to the repository with read access): "+fx.sshPub)
		exported(t, s, "", args...)
	})

	t.Run("git over SSH with a passphrase on stdin", func(t *testing.T) {
		s := applied(t, "apps", "git-ssh-protected", fx.passphrase+"\n", "git", "git-ssh-protected", "-n", "apps", "--url=ssh://git@github.com/org/fleet.git",
			"--private-key-file", fx.sshProtectedFile, "--known-hosts-file", fx.knownHostsFile, "--password-stdin")
		assert.Equal(t, []string{"identity", "identity.pub", "known_hosts", "password"}, secretKeys(s))
		assert.Equal(t, fx.sshPub, string(s.Data["identity.pub"]))
		assert.Equal(t, fx.passphrase, string(s.Data["password"]))
	})

	t.Run("githubapp", func(t *testing.T) {
		args := []string{"githubapp", "gh-app", "-n", "apps", "--app-id=12345", "--app-installation-id=678", "--app-private-key", fx.appKeyFile, "--app-base-url=https://github.example.com/api/v3"}
		s := applied(t, "apps", "gh-app", "", args...)
		assert.Equal(t, corev1.SecretTypeOpaque, s.Type)
		assert.Equal(t, []string{"githubAppBaseURL", "githubAppID", "githubAppInstallationID", "githubAppPrivateKey"}, secretKeys(s))
		assert.Equal(t, "12345", string(s.Data["githubAppID"]))
		assert.Equal(t, "678", string(s.Data["githubAppInstallationID"]))
		assert.Equal(t, fx.appKey, s.Data["githubAppPrivateKey"])
		exported(t, s, "", args...)

		s = applied(t, "apps", "gh-app-owner", "", "githubapp", "gh-app-owner", "-n", "apps", "--app-id=12345", "--app-installation-owner=my-org", "--app-private-key", fx.appKeyFile)
		assert.Equal(t, []string{"githubAppID", "githubAppInstallationOwner", "githubAppPrivateKey"}, secretKeys(s))
	})

	t.Run("oci", func(t *testing.T) {
		args := []string{"oci", "ghcr-auth", "-n", "apps", "--url=oci://ghcr.io/org/fleet-manifests", "--username=flux", "--password-stdin"}
		s := applied(t, "apps", "ghcr-auth", fx.token, args...)
		assert.Equal(t, corev1.SecretTypeDockerConfigJson, s.Type)
		assert.Equal(t, []string{".dockerconfigjson"}, secretKeys(s))
		var cfg struct {
			Auths map[string]struct{ Username, Password, Auth string } `json:"auths"`
		}
		require.NoError(t, json.Unmarshal(s.Data[".dockerconfigjson"], &cfg))
		require.Contains(t, cfg.Auths, "ghcr.io")
		assert.Equal(t, "flux", cfg.Auths["ghcr.io"].Username)
		assert.Equal(t, fx.token, cfg.Auths["ghcr.io"].Password)
		assert.Equal(t, base64.StdEncoding.EncodeToString([]byte("flux:"+fx.token)), cfg.Auths["ghcr.io"].Auth)
		exported(t, s, fx.token, args...)
	})

	t.Run("bucket", func(t *testing.T) {
		args := []string{"bucket", "bucket-auth", "-n", "apps", "--access-key=AKIAFIXTURE", "--secret-key-stdin"}
		s := applied(t, "apps", "bucket-auth", fx.bucketSecret+"\n", args...)
		assert.Equal(t, []string{"accesskey", "secretkey"}, secretKeys(s))
		assert.Equal(t, "AKIAFIXTURE", string(s.Data["accesskey"]))
		assert.Equal(t, fx.bucketSecret, string(s.Data["secretkey"]))
		exported(t, s, fx.bucketSecret+"\n", args...)

		r := plugin("", "bucket", "bucket-flag", "-n", "apps", "--access-key=AKIAFIXTURE", "--secret-key", fx.bucketSecret)
		require.Equal(t, 0, r.Code, r.Stderr)
		assert.Contains(t, r.Stderr, "prefer --secret-key-stdin")
	})

	t.Run("a changed value is applied over the old one", func(t *testing.T) {
		r := plugin(fx.password, "git", "git-https", "-n", "apps", "--url=https://github.com/org/fleet.git", "--username=flux", "--password-stdin")
		require.Equal(t, 0, r.Code, r.Stderr)
		assert.Equal(t, "secret/git-https configured\n", r.Stdout)
		s := getSecret(t, c, "apps", "git-https")
		assert.Equal(t, fx.password, string(s.Data["password"]))
		// ca.crt was ours and is no longer given: server-side apply removes it.
		assert.Equal(t, []string{"password", "username"}, secretKeys(s))
	})

	t.Run("bad input gets a clear error and creates nothing", func(t *testing.T) {
		ssh := []string{"--url=ssh://git@github.com/org/fleet.git", "--known-hosts-file", fx.knownHostsFile}
		for _, tc := range []struct {
			name  string
			stdin string
			args  []string
			code  int
			want  string
		}{
			{"missing key file", "", append([]string{"git", "bad", "-n", "apps", "--private-key-file", filepath.Join(fx.dir, "nope")}, ssh...), 1,
				"--private-key-file " + filepath.Join(fx.dir, "nope") + ": the file does not exist"},
			{"unreadable key file", "", append([]string{"git", "bad", "-n", "apps", "--private-key-file", fx.dir}, ssh...), 1,
				"--private-key-file " + fx.dir + ": cannot read the file"},
			{"private key not PEM", "", append([]string{"git", "bad", "-n", "apps", "--private-key-file", fx.notPEM}, ssh...), 1,
				"--private-key-file " + fx.notPEM + ": not a PEM private key"},
			{"passphrase missing", "", append([]string{"git", "bad", "-n", "apps", "--private-key-file", fx.sshProtectedFile}, ssh...), 1,
				"protected by a passphrase"},
			{"wrong passphrase", "not-the-" + fx.passphrase, append([]string{"git", "bad", "-n", "apps", "--private-key-file", fx.sshProtectedFile, "--password-stdin"}, ssh...), 1,
				"the passphrase does not decrypt the private key"},
			{"missing known hosts file", "", []string{"git", "bad", "-n", "apps", "--url=ssh://git@github.com/org/fleet.git", "--private-key-file", fx.sshKeyFile, "--known-hosts-file", filepath.Join(fx.dir, "nope")}, 1,
				"--known-hosts-file " + filepath.Join(fx.dir, "nope") + ": the file does not exist"},
			{"no host key scan", "", []string{"git", "bad", "-n", "apps", "--url=ssh://git@github.com/org/fleet.git", "--private-key-file", fx.sshKeyFile}, 2,
				"--known-hosts-file is required; the plugin does not scan the host keys of github.com over the network"},
			{"SSH key with an HTTPS URL", "", []string{"git", "bad", "-n", "apps", "--url=https://github.com/org/fleet.git", "--private-key-file", fx.sshKeyFile}, 2,
				"--private-key-file and --known-hosts-file are for ssh:// URLs"},
			{"empty stdin", "", []string{"git", "bad", "-n", "apps", "--url=https://github.com/org/fleet.git", "--username=flux", "--password-stdin"}, 1,
				"--password-stdin: nothing on stdin"},
			{"App ID not a number", "", []string{"githubapp", "bad", "-n", "apps", "--app-id=my-app", "--app-installation-id=1", "--app-private-key", fx.appKeyFile}, 1,
				`--app-id "my-app": must be a positive number`},
			{"App key not RSA", "", []string{"githubapp", "bad", "-n", "apps", "--app-id=1", "--app-installation-id=1", "--app-private-key", fx.edKeyFile}, 1,
				"the private key does not parse as RSA"},
			{"App key missing", "", []string{"githubapp", "bad", "-n", "apps", "--app-id=1", "--app-installation-id=1", "--app-private-key", filepath.Join(fx.dir, "nope")}, 1,
				"the file does not exist"},
			{"both installation flags", "", []string{"githubapp", "bad", "-n", "apps", "--app-id=1", "--app-installation-id=1", "--app-installation-owner=o", "--app-private-key", fx.appKeyFile}, 2,
				"exclude each other"},
			{"password twice", fx.password, []string{"oci", "bad", "-n", "apps", "--url=ghcr.io", "--username=u", "--password", fx.password, "--password-stdin"}, 2,
				"--password and --password-stdin exclude each other"},
			{"bucket without secret key", "", []string{"bucket", "bad", "-n", "apps", "--access-key=AKIA"}, 2,
				"--secret-key-stdin (or --secret-key) is required"},
			{"bad Secret name", "", []string{"bucket", "Bad_Name", "-n", "apps", "--access-key=AKIA", "--secret-key-stdin"}, 2,
				`invalid Secret name "Bad_Name"`},
			{"namespace does not exist", fx.bucketSecret, []string{"bucket", "bad", "-n", "nowhere", "--access-key=AKIA", "--secret-key-stdin"}, 1,
				`namespace "nowhere" does not exist`},
		} {
			t.Run(tc.name, func(t *testing.T) {
				r := plugin(tc.stdin, tc.args...)
				assert.Equal(t, tc.code, r.Code, r.Stderr)
				assert.Contains(t, r.Stderr, tc.want)
				assert.Empty(t, r.Stdout)
				assertNoSecret(t, c, "apps", "bad")
			})
		}
	})

	t.Run("no secret value in any output but --export", func(t *testing.T) {
		require.Greater(t, len(runs), 30)
		exports := 0
		for _, run := range runs {
			for _, v := range fx.secretValues() {
				assert.NotContains(t, run.r.Stderr, v, "stderr of %v", run.args)
				if !run.export {
					assert.NotContains(t, run.r.Stdout, v, "stdout of %v", run.args)
				}
			}
			if run.export {
				exports++
			}
		}
		assert.Equal(t, 5, exports)
	})
}

func managers(s *corev1.Secret) []string {
	var out []string
	for _, m := range s.ManagedFields {
		out = append(out, m.Manager)
	}
	return out
}
