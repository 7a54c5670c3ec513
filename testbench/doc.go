// Package testbench is Signet's end-to-end bench: real parts, no mocks.
//
// It provides, for the other rooms' end-to-end tests:
//
//   - NewCA(dir): a throw-away CA; CA.CAPath is its PEM root, CA.ServerCert /
//     CA.WriteServerCert issue certificates for 127.0.0.1, ::1 and localhost.
//   - StartGitHubIssuer / StartGitLabIssuer / StartJenkinsIssuer(ctx, ca, opts):
//     OIDC issuers served over TLS on free loopback ports with a real discovery
//     document and JWKS, minting RS256 tokens (ES256 for Jenkins on request)
//     with the claims and lifetimes each platform sets. Each has .URL (the iss),
//     .CAPath, .Mint(claims) (claims merged over the platform defaults; a nil
//     value deletes a default claim), .Claims(overrides), and hostile minting:
//     MintExpired, MintNotYetValid, MintWrongAudience, MintForeignKey (right
//     kid, wrong key), MintUnknownKid, MintAlgNone, MintHS256PublicKey (alg
//     confusion), MintTampered; RotateKey for JWKS refresh tests; SetDown to
//     make the issuer answer 503.
//     GitHubIssuer also serves ACTIONS_ID_TOKEN_REQUEST_URL (GitHubIssuer.RequestURL,
//     bearer GitHubIssuer.RequestToken; "&audience=" honoured; 401 without and
//     403 with a wrong bearer; answers {"count":N,"value":"<jwt>"}).
//     Each issuer's Env(...) returns the job environment (GITHUB_*, CI_*,
//     JENKINS_URL/JOB_URL/...) matching its default claims, with SSL_CERT_FILE
//     set to the bench CA and, for GitLab/Jenkins, SIGNET_ID_TOKEN.
//   - NewSoftHSM(ctx, dir): a SoftHSM2 instance with its own SOFTHSM2_CONF and
//     token directory; CreateKey(label, algorithm) makes a key through
//     signer/hsm.GenerateKey and returns its RFC 7512 URI (PIN via pin-source
//     file); Env() is what a child process needs; Unplug/Replug make the token
//     disappear and come back. FindSoftHSM reports how to install SoftHSM2.
//   - BuildBinaries(ctx, dir): go build of cmd/signet and cmd/signetd.
//   - SignerConfig + WriteConfig: signer.yaml; IssuerEntry(name, issuer) makes
//     the issuers: entry (with ca:).
//   - StartSigner(ctx, SignerOptions{Signetd, Dir, CA, Config, Env}): the real
//     signetd on a free loopback port over TLS, waiting for /readyz; .URL,
//     .AuditPath, .CAPath, .Stop (SIGTERM), .Kill (SIGKILL), .Restart,
//     .Readyz. AuditRecords and AuditVerify read and check the audit log.
//
// Typical use in a test:
//
//	ctx := t.Context()
//	dir := t.TempDir()
//	ca, _ := testbench.NewCA(dir)
//	gh, _ := testbench.StartGitHubIssuer(ctx, ca, testbench.IssuerOptions{})
//	h, _ := testbench.NewSoftHSM(ctx, filepath.Join(dir, "hsm"))
//	uri, _ := h.CreateKey("release", "ecdsa-p256")
//	bins, _ := testbench.BuildBinaries(ctx, dir)
//	sig, _ := testbench.StartSigner(ctx, testbench.SignerOptions{
//		Signetd: bins.Signetd, Dir: filepath.Join(dir, "signer"), CA: ca, Env: h.Env(),
//		Config: testbench.SignerConfig{
//			Issuers: []testbench.SignerIssuer{testbench.IssuerEntry("github", gh.Issuer)},
//			Keys: []testbench.SignerKey{{Name: "release", Purpose: "firmware", URI: uri,
//				Allow: []testbench.AllowRule{{Issuer: "github",
//					Claims: map[string]string{"repository_id": testbench.GitHubRepositoryID}}}}},
//		}})
//	defer sig.Stop()
//	tok, _ := gh.Mint(nil) // or run `signet sign` with gh.Env(dir)
//
// The scenario matrix (RunMatrix, also `go test ./testbench/...` and
// `signet-testbench`) is described in matrix.go.
package testbench
