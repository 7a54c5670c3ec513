package testbench

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// Default build identity of the bench's Jenkins job (a multibranch pipeline
// signet-ci/demo, branch main, build 42).
const (
	JenkinsBuildNumber = 42
	JenkinsGitURL      = "https://git.example.com/signet-ci/demo.git"
	JenkinsGitCommit   = "c0ffee5a7c9e1b3d5f7a9c1e3b5d7f9a1c3e5b7d"
	JenkinsBranch      = "main"
)

// JenkinsIssuer mints tokens like the Jenkins OpenID Connect Provider
// plugin: iss ${JENKINS_URL}oidc (or a folder's URL + oidc), sub the job URL,
// build_number, aud from the credential, no jti and no nbf.
type JenkinsIssuer struct {
	*Issuer
	// JenkinsURL is JENKINS_URL (with a trailing slash).
	JenkinsURL string
	// JobURL is JOB_URL of the default job (the sub claim).
	JobURL string
	// Folder is the folder of a folder-scoped issuer ("" for the global one).
	Folder    string
	templates bool
}

// StartJenkinsIssuer serves a Jenkins-like OIDC provider over TLS on a free
// loopback port. Tokens are RS256 (ES256 with opts.Alg) and live one hour
// (the plugin's default). It stops when ctx is done or on Close.
func StartJenkinsIssuer(ctx context.Context, ca *CA, opts IssuerOptions) (*JenkinsIssuer, error) {
	issPath := "/oidc"
	if opts.JenkinsFolder != "" {
		// The plugin's folder issuer is ${JENKINS_URL}oidc/job/FOLDER (nested
		// folders: oidc/job/A/job/B), not a path under the folder itself.
		issPath = "/oidc/job/" + strings.Join(strings.Split(strings.Trim(opts.JenkinsFolder, "/"), "/"), "/job/")
	}
	is, err := startIssuer(ctx, ca, issuerSpec{platform: "jenkins", issPath: issPath, jwksPath: issPath + "/jwks",
		lifetime: time.Hour, nbfBefore: -1 /* the plugin sets no nbf */}, opts)
	if err != nil {
		return nil, err
	}
	j := &JenkinsIssuer{Issuer: is, JenkinsURL: is.BaseURL + "/", Folder: opts.JenkinsFolder, templates: opts.JenkinsClaimTemplates}
	j.JobURL = j.JenkinsURL + "job/signet-ci/job/demo/job/main/"
	is.defaults = func(time.Time) map[string]any { return j.DefaultClaims() }
	return j, nil
}

// DefaultClaims returns the plugin's claims for build 42 of the default job
// (without iss/aud/iat/exp): sub and build_number (a number), plus git_url,
// git_commit and branch when claim templates are configured.
func (j *JenkinsIssuer) DefaultClaims() map[string]any {
	c := map[string]any{
		"sub":          j.JobURL,
		"build_number": JenkinsBuildNumber,
	}
	if j.templates {
		c["git_url"] = JenkinsGitURL
		c["git_commit"] = JenkinsGitCommit
		c["branch"] = JenkinsBranch
	}
	return c
}

// Env returns the environment of a Jenkins build step of the default job,
// with SIGNET_ID_TOKEN holding token (a credentials-bound variable) and
// SSL_CERT_FILE pointing at the bench CA.
func (j *JenkinsIssuer) Env(workspace, token string) map[string]string {
	build := fmt.Sprint(JenkinsBuildNumber)
	return map[string]string{
		"JENKINS_URL":     j.JenkinsURL,
		"JENKINS_HOME":    "/var/jenkins_home",
		"JOB_URL":         j.JobURL,
		"JOB_NAME":        "signet-ci/demo/main",
		"JOB_BASE_NAME":   "main",
		"BUILD_NUMBER":    build,
		"BUILD_ID":        build,
		"BUILD_URL":       j.JobURL + build + "/",
		"BUILD_TAG":       "jenkins-signet-ci-demo-main-" + build,
		"EXECUTOR_NUMBER": "0",
		"NODE_NAME":       "built-in",
		"WORKSPACE":       workspace,
		"BRANCH_NAME":     JenkinsBranch,
		"GIT_URL":         JenkinsGitURL,
		"GIT_COMMIT":      JenkinsGitCommit,
		"GIT_BRANCH":      "origin/" + JenkinsBranch,
		"SIGNET_ID_TOKEN": token,
		"SSL_CERT_FILE":   j.CAPath,
	}
}
