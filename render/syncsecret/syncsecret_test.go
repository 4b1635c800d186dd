package syncsecret

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/ssh"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

func ed25519PEM(t *testing.T, passphrase string) ([]byte, ssh.PublicKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	var block *pem.Block
	if passphrase == "" {
		block, err = ssh.MarshalPrivateKey(priv, "test")
	} else {
		block, err = ssh.MarshalPrivateKeyWithPassphrase(priv, "test", []byte(passphrase))
	}
	require.NoError(t, err)
	sshPub, err := ssh.NewPublicKey(pub)
	require.NoError(t, err)
	return pem.EncodeToMemory(block), sshPub
}

func TestRequired(t *testing.T) {
	r := Required(KindGitRepository, "", "https://github.com/o/r.git")
	assert.Equal(t, CreateGit, r.Create)
	assert.Nil(t, r.Missing([]string{"username", "password"}))
	assert.Nil(t, r.Missing([]string{"bearerToken"}))
	assert.Equal(t, []string{"password"}, r.Missing([]string{"username"}))
	assert.Equal(t, "username and password, or bearerToken", r.Describe())

	r = Required(KindGitRepository, ProviderGeneric, "ssh://git@github.com/o/r.git")
	assert.Equal(t, []string{"known_hosts"}, r.Missing([]string{"identity", "identity.pub"}))

	r = Required(KindGitRepository, ProviderGitHub, "https://github.com/o/r.git")
	assert.Equal(t, CreateGitHubApp, r.Create)
	assert.Nil(t, r.Missing([]string{"githubAppID", "githubAppInstallationOwner", "githubAppPrivateKey"}))
	assert.Equal(t, []string{"githubAppInstallationID"}, r.Missing([]string{"githubAppID", "githubAppPrivateKey"}))

	r = Required(KindOCIRepository, "", "oci://ghcr.io/o/r")
	assert.Equal(t, corev1.SecretTypeDockerConfigJson, r.Type)
	assert.Equal(t, []string{".dockerconfigjson"}, r.Missing(nil))
	assert.Empty(t, Required(KindOCIRepository, ProviderAWS, "oci://x").AnyOf)

	r = Required(KindBucket, ProviderAWS, "s3.amazonaws.com")
	assert.Equal(t, []string{"secretkey"}, r.Missing([]string{"accesskey"}))
	assert.Nil(t, Required(KindBucket, ProviderAzure, "").Missing([]string{"accountKey"}))
}

func TestTransportAndHost(t *testing.T) {
	assert.Equal(t, TransportHTTPS, GitTransport("https://github.com/o/r"))
	assert.Equal(t, TransportSSH, GitTransport("ssh://git@github.com/o/r"))
	assert.Equal(t, TransportSSH, GitTransport("git@github.com:o/r.git"))
	assert.Equal(t, "", GitTransport("ftp://x"))
	assert.Equal(t, "github.com", URLHost("git@github.com:o/r.git"))
	assert.Equal(t, "example.com", URLHost("ssh://git@example.com:2222/o/r"))
	assert.Equal(t, "minio.example.com", URLHost("minio.example.com"))
	assert.Equal(t, "ghcr.io", RegistryHost("oci://ghcr.io/o/r"))
	assert.Equal(t, "localhost:5000", RegistryHost("localhost:5000"))
	assert.Equal(t, "", RegistryHost("user@ghcr.io"))
}

func TestGitSSH(t *testing.T) {
	key, pub := ed25519PEM(t, "")
	hosts := []byte("github.com " + string(ssh.MarshalAuthorizedKey(pub)))
	s, err := Git("auth", "ns", GitOptions{URL: "ssh://git@github.com/o/r", PrivateKey: key, KnownHosts: hosts})
	require.NoError(t, err)
	assert.Equal(t, string(ssh.MarshalAuthorizedKey(pub)), string(s.Data[KeyIdentityPub]))
	assert.Equal(t, key, s.Data[KeyIdentity])
	assert.NotContains(t, s.Data, KeyPassword)

	protected, _ := ed25519PEM(t, "open sesame")
	_, err = Git("auth", "ns", GitOptions{URL: "ssh://git@github.com/o/r", PrivateKey: protected, PrivateKeySource: "k", KnownHosts: hosts})
	assert.ErrorContains(t, err, "protected by a passphrase")
	_, err = Git("auth", "ns", GitOptions{URL: "ssh://git@github.com/o/r", PrivateKey: protected, PrivateKeySource: "k", Password: "wrong", KnownHosts: hosts})
	assert.ErrorContains(t, err, "does not decrypt")
	s, err = Git("auth", "ns", GitOptions{URL: "ssh://git@github.com/o/r", PrivateKey: protected, Password: "open sesame", KnownHosts: hosts})
	require.NoError(t, err)
	assert.Equal(t, "open sesame", string(s.Data[KeyPassword]))

	_, err = Git("auth", "ns", GitOptions{URL: "ssh://git@github.com/o/r", PrivateKey: []byte("hunter2"), PrivateKeySource: "k", KnownHosts: hosts})
	assert.ErrorContains(t, err, "not a PEM private key")
	assert.NotContains(t, err.Error(), "hunter2")
	_, err = Git("auth", "ns", GitOptions{URL: "ssh://git@github.com/o/r", PrivateKey: key, KnownHosts: []byte("# nothing\n"), KnownHostsSource: "h"})
	assert.ErrorContains(t, err, "no host key")
	_, err = Git("auth", "ns", GitOptions{URL: "ssh://git@github.com/o/r", PrivateKey: key})
	assert.ErrorContains(t, err, "--known-hosts-file")
	_, err = Git("auth", "ns", GitOptions{URL: "https://github.com/o/r", PrivateKey: key, KnownHosts: hosts})
	assert.ErrorContains(t, err, "only works with an ssh:// URL")
	_, err = Git("auth", "ns", GitOptions{URL: "git@github.com:o/r", PrivateKey: key, KnownHosts: hosts})
	assert.ErrorContains(t, err, "ssh://git@github.com/o/r")
}

func TestOCIAndExport(t *testing.T) {
	s, err := OCI("reg", "ns", OCIOptions{Registry: "oci://ghcr.io/o/r", Username: "u", Password: "p"})
	require.NoError(t, err)
	assert.Equal(t, corev1.SecretTypeDockerConfigJson, s.Type)
	var cfg struct {
		Auths map[string]struct{ Username, Password, Auth string } `json:"auths"`
	}
	require.NoError(t, json.Unmarshal(s.Data[KeyDockerConfigJSON], &cfg))
	assert.Equal(t, base64.StdEncoding.EncodeToString([]byte("u:p")), cfg.Auths["ghcr.io"].Auth)

	out, err := ExportYAML(s)
	require.NoError(t, err)
	var back corev1.Secret
	require.NoError(t, yaml.Unmarshal(out[len("---\n"):], &back))
	assert.Equal(t, "reg", back.Name)
	assert.Equal(t, "ns", back.Namespace)
	assert.Equal(t, string(s.Data[KeyDockerConfigJSON]), back.StringData[KeyDockerConfigJSON])
}

func TestGitHubAppValidation(t *testing.T) {
	key, _ := ed25519PEM(t, "")
	_, err := GitHubApp("a", "ns", GitHubAppOptions{AppID: "12x", InstallationID: "1", PrivateKey: key})
	assert.ErrorContains(t, err, "--app-id \"12x\": must be a positive number")
	_, err = GitHubApp("a", "ns", GitHubAppOptions{AppID: "1", InstallationID: "1", PrivateKey: key, PrivateKeySource: "k"})
	assert.ErrorContains(t, err, "k: the private key does not parse as RSA")
}

func TestReadFile(t *testing.T) {
	dir := t.TempDir()
	_, err := ReadFile("--x", filepath.Join(dir, "missing"))
	assert.ErrorContains(t, err, "does not exist")
	_, err = ReadFile("--x", dir)
	assert.ErrorContains(t, err, "cannot read the file")
	empty := filepath.Join(dir, "empty")
	require.NoError(t, os.WriteFile(empty, []byte("\n"), 0o600))
	_, err = ReadFile("--x", empty)
	assert.ErrorContains(t, err, "is empty")
}
