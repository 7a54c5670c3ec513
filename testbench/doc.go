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
//   - NewCodeSigningCA(dir): a code-signing CA; IssueChain(path, cn, pub,
//     notBefore, notAfter) writes a leaf (digitalSignature, EKU codeSigning)
//     plus CA chain for signer.yaml keys[].certificate; ReadPublicKey reads
//     an HSM key's public key. GitHubTagClaims/GitHubTagEnv describe a tag build.
//   - BuildBinaries(ctx, dir): go build of cmd/signet and cmd/signetd.
//   - FindTool(name): a program on PATH, else in $(go env GOPATH)/bin (cosign,
//     act, strace ...); the error says how to install it. FindCosign(ctx) is
//     FindTool("cosign").
//   - SignerConfig (= signer.Config, the signer's own schema) + WriteConfig:
//     signer.yaml; IssuerEntry(name, issuer) makes the issuers: entry (with ca:).
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
// # The matrix
//
// NewBench builds the whole environment (CA; GitHub, GitLab, Jenkins and a
// folder-scoped ES256 Jenkins issuer; a rogue GitHub-like issuer the signer
// does not trust; SoftHSM2 firmware keys p256, p384, rsa3072, ed25519 and
// tags-only; code keys code, code-expired and code-not-yet-valid with chains
// from a code-signing CA;
// signetd behind a TLS proxy that counts answers and injects faults) and
// Bench.RunMatrix runs every row; `go test ./testbench/...` and
// `go run ./cmd/signet-testbench [--json FILE] [--scale]` run the same rows.
// `signet sign` runs as a real process with the platform's environment
// (GITHUB_ACTIONS + GITHUB_* + ACTIONS_ID_TOKEN_REQUEST_*; GITLAB_CI + CI_* +
// SIGNET_ID_TOKEN; JENKINS_URL + JOB_URL + ... + SIGNET_ID_TOKEN); outputs are
// checked with `signet verify` and cosign (verify-blob for non-Ed25519 .sig,
// verify-blob-attestation for every DSSE envelope). After every row the
// audit log must verify (`signetd audit verify`) and grow by exactly the
// answers signetd gave (successes plus refusals, seen by the proxy): one
// record per answer, with the answer's request id, allow for 2xx, deny else.
//
// Rows: good/sign-attest-verify ({github,gitlab,jenkins} x
// {p256,p384,rsa3072,ed25519}), good/jenkins-folder-issuer-es256,
// good/code-signing-cert (GitHub tag build, chain in signer.pub);
// hostile/code-cert-expired, hostile/code-cert-not-yet-valid,
// hostile/purpose-mismatch;
// hostile/* (forged, alg none, HS256 confusion, unknown kid, tampered
// claims, expired, not yet valid, too old, jti over budget, too many
// digests, wrong audience x3, wrong issuer, policy x4, statement naming
// another repository x3, and three through the CLI checking that nothing is
// written); tamper/* (artifact, signature, envelope changed after signing);
// verify/wrong-expectations; fault/* (503 then recovery, signer down,
// signer slower than the client's --timeout, HSM token unplugged mid-run
// between the sign answer and the attest call, then back);
// load/parallel-ci-jobs; crash/kill-9-audit-complete; audit/*.
//
// # Which row catches a removed protection
//
//	protection removed                     row that turns red
//	audience check                         hostile/wrong-audience (github, gitlab, jenkins)
//	issuer allowlist                       hostile/wrong-issuer (valid token from a real
//	                                       issuer with discovery + JWKS, not configured)
//	claim policy                           hostile/policy-other-repo (x3),
//	                                       hostile/policy-branch-on-tags-key,
//	                                       hostile/cli-policy-refused
//	provenance identity check              hostile/statement-other-repo (x3)
//	audit fsync before answering           audit/fsync-before-answer (signetd under strace:
//	                                       an fsync/fdatasync of the audit log completes
//	                                       before each answer is written)
//	audit record before answering          crash/kill-9-audit-complete (every signature a
//	                                       client received is in the log after kill -9)
//	token signature / alg pinning          hostile/forged-token, hostile/alg-none,
//	                                       hostile/hs256-confusion, hostile/tampered-claims
//	exp / nbf / iat checks                 hostile/expired-token, hostile/not-yet-valid
//	code certificate validity              hostile/code-cert-expired, hostile/code-cert-not-yet-valid
//	key purpose of allow rules             hostile/purpose-mismatch
//	maximum token age                      hostile/token-too-old
//	per-jti use budget                     hostile/jti-over-budget
//	request bounds (max_digests)           hostile/too-many-digests
//	atomic outputs in the client           fault/signer-down, fault/signer-slow,
//	                                       fault/hsm-unavailable, hostile/cli-* (no partial outputs)
//
// RunMutants (signet-testbench --mutants, TestMutants) proves the first five
// lines and the two code-signing lines: it removes each protection from a copy of signetd's source
// (testbench.Mutants), builds it, swaps it in and requires its rows to fail.
//
// A kill -9 alone cannot show a missing fsync (the page cache outlives the
// process), so the fsync row watches the syscalls; it needs strace.
package testbench
