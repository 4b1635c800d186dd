package bench

import (
	"testing"
	"io"
	"net/http"
	"strings"
	"k8s.io/client-go/rest"
	"github.com/fluxinstance/kubectl-fluxinstance/test/testenv"
)

func TestZZDebug(t *testing.T) {
	env := testenv.Start(t)
	tc, _ := rest.TLSConfigFor(env.Config)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tc}}
	resp, err := hc.Get(env.Host + "/metrics")
	if err != nil { t.Fatal(err) }
	b, _ := io.ReadAll(resp.Body)
	t.Log(resp.Status, len(b))
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, "apiserver_request_total") { t.Log(l) }
	}
}
