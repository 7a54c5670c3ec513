// signetSign: sign build outputs and attest their provenance with Signet.
//
//   def out = signetSign(key: 'release', artifacts: 'dist/*')
//
// The OpenID Connect id token credential is bound with withCredentials just
// around the `signet sign` call and reaches signet only through the
// environment (SIGNET_ID_TOKEN / SIGNET_ID_TOKEN_FILE); every other value is
// passed through withEnv too, so the shell command line is a constant that
// contains neither the token nor any user-supplied text. Help:
// signetSign.txt; guide: docs/jenkins.md.

import groovy.json.JsonSlurperClassic

def call(Map args = [:]) {
    Map o = signetSignOptions(args)

    // Where the Jenkins adapter of signet writes its results (SIGNET_OUTPUTS).
    String tmp = env.WORKSPACE_TMP ?: ((env.WORKSPACE ?: '.') + '@tmp')
    String outputs = tmp + '/signet-outputs-' + UUID.randomUUID() + '.json'

    // Plain Strings (not GStrings) of NAME=value, as withEnv wants them.
    List<String> vars = [
        'SIGNET_CLI=' + o.signet,
        'SIGNET_SIGNER=' + o.signerUrl,
        'SIGNET_AUDIENCE=' + o.audience,
        'SIGNET_KEY=' + o.key,
        'SIGNET_PROVENANCE=' + o.provenance,
        'SIGNET_OUTPUTS=' + outputs,
    ]
    String cmd = '"$SIGNET_CLI" sign --platform jenkins --signer "$SIGNET_SIGNER" --audience "$SIGNET_AUDIENCE" --key "$SIGNET_KEY" --provenance="$SIGNET_PROVENANCE"'
    if (o.outputDir) {
        vars << 'SIGNET_OUTPUT_DIR=' + o.outputDir
        cmd += ' --output-dir "$SIGNET_OUTPUT_DIR"'
    }
    if (o.provenancePath) {
        vars << 'SIGNET_PROVENANCE_PATH=' + o.provenancePath
        cmd += ' --provenance-path "$SIGNET_PROVENANCE_PATH"'
    }
    if (o.caCert) {
        vars << 'SIGNET_CA_CERT=' + o.caCert
        cmd += ' --ca-cert "$SIGNET_CA_CERT"'
    }
    cmd += ' --'
    for (int i = 1; i <= o.artifacts.size(); i++) {
        vars << 'SIGNET_ARTIFACT_' + i + '=' + o.artifacts[i - 1]
        cmd += ' "$SIGNET_ARTIFACT_' + i + '"'
    }

    def credential = o.credentialsType == 'file' ?
        file(credentialsId: o.credentialsId, variable: 'SIGNET_ID_TOKEN_FILE') :
        string(credentialsId: o.credentialsId, variable: 'SIGNET_ID_TOKEN')

    withEnv(vars) {
        // The plugin mints a fresh token when the credential is bound, so
        // bind it only around the command that uses it.
        withCredentials([credential]) {
            sh(script: cmd, label: 'signet sign')
        }
    }

    if (!fileExists(outputs)) {
        error("signetSign: signet finished but did not write its outputs file ${outputs}; " +
              "use a signet release whose Jenkins adapter writes SIGNET_OUTPUTS (docs/jenkins.md)")
    }
    Map res = signetSignParseOutputs(readFile(file: outputs, encoding: 'UTF-8'))
    res.outputsFile = outputs

    if (o.archive) {
        List<String> files = []
        for (String p : res.signatures) {
            files << signetSignWorkspacePath(p)
        }
        if (res.provenance) {
            files << signetSignWorkspacePath(res.provenance)
        }
        if (res.publicKey) {
            files << signetSignWorkspacePath(res.publicKey)
        }
        archiveArtifacts(artifacts: files.join(','), fingerprint: true, allowEmptyArchive: false)
        res.archived = files
    }
    return res
}

// signetSignOptions validates the arguments and fills in the defaults.
def signetSignOptions(Map args) {
    Set<String> known = ['key', 'artifacts', 'credentialsId', 'credentialsType', 'signerUrl', 'audience',
                         'provenance', 'provenancePath', 'outputDir', 'caCert', 'archive', 'signet'] as Set
    for (def k : args.keySet()) {
        if (!known.contains(k.toString())) {
            error("signetSign: unknown argument '${k}'; the arguments are ${known.sort().join(', ')} (see signetSign.txt)")
        }
    }
    Map o = [
        key            : args.key,
        credentialsId  : args.credentialsId ?: 'signet-oidc',
        credentialsType: args.credentialsType ?: 'string',
        signerUrl      : args.signerUrl ?: env.SIGNET_SIGNER,
        audience       : args.audience ?: env.SIGNET_AUDIENCE,
        provenance     : args.containsKey('provenance') ? signetSignBool(args.provenance) : true,
        provenancePath : args.provenancePath,
        outputDir      : args.outputDir,
        caCert         : args.caCert ?: env.SIGNET_CA_CERT,
        archive        : args.containsKey('archive') ? signetSignBool(args.archive) : true,
        signet         : args.signet ?: (env.SIGNET_CLI ?: 'signet'),
    ]
    if (!o.key) {
        error("signetSign: 'key' is required: the name of a signer key, e.g. signetSign(key: 'release', artifacts: 'dist/*')")
    }
    if (!o.signerUrl) {
        error("signetSign: 'signerUrl' is required: pass signerUrl: 'https://signer.example.com' or set SIGNET_SIGNER in environment {}")
    }
    if (!o.audience) {
        error("signetSign: 'audience' is required: pass the signer's audience (the Audience of the '${o.credentialsId}' credential) or set SIGNET_AUDIENCE")
    }
    if (!(o.credentialsType in ['string', 'file'])) {
        error("signetSign: credentialsType must be 'string' (OpenID Connect id token) or 'file' (OpenID Connect id token as file), not '${o.credentialsType}'")
    }
    List<String> patterns = []
    def a = args.artifacts
    if (a instanceof CharSequence) {
        for (String s : a.toString().split(',')) {
            if (s.trim()) {
                patterns << s.trim()
            }
        }
    } else if (a instanceof List) {
        for (def s : a) {
            if (s != null && s.toString().trim()) {
                patterns << s.toString().trim()
            }
        }
    }
    if (patterns.isEmpty()) {
        error("signetSign: 'artifacts' is required: a file, glob or comma-separated list, e.g. artifacts: 'dist/*'")
    }
    o.artifacts = patterns
    return o
}

// signetSignBool accepts true/false and 'true'/'false' (e.g. from params).
def signetSignBool(def v) {
    return v instanceof CharSequence ? v.toString().trim().toBoolean() : (v as boolean)
}

// signetSignParseOutputs turns the adapter's outputs JSON into a plain map.
@NonCPS
def signetSignParseOutputs(String text) {
    def j = new JsonSlurperClassic().parseText(text)
    List<String> sigs = []
    for (def s : (j.signatures ?: [])) {
        sigs << s.toString()
    }
    List<Map> arts = []
    for (def a : (j.artifacts ?: [])) {
        arts << [name: a.name, path: a.path, sha256: a.sha256, signature: a.signature]
    }
    return [
        key       : j.key?.name,
        algorithm : j.key?.algorithm,
        keyId     : j.key?.key_id,
        publicKey : j.public_key,
        provenance: j.provenance ?: null,
        signatures: sigs,
        artifacts : arts,
        auditSeq  : j.audit_seq,
    ]
}

// signetSignWorkspacePath makes p relative to the workspace, as
// archiveArtifacts wants it.
def signetSignWorkspacePath(String p) {
    String ws = env.WORKSPACE
    if (p.startsWith('/')) {
        if (ws && p.startsWith(ws + '/')) {
            return p.substring(ws.length() + 1)
        }
        error("signetSign: cannot archive ${p}: it is outside the workspace ${ws}; use an outputDir inside the workspace or archive: false")
    }
    return p.startsWith('./') ? p.substring(2) : p
}
