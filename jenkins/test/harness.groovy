// Pipeline harness for the shared-library steps in jenkins/vars.
//
//   groovy harness.groovy CONFIG.json RESULT.json
//
// It loads vars/<step>.groovy as Jenkins loads a global variable script and
// supplies the pipeline steps the step uses, behaving as the real ones do:
//   env                 the build's environment (EnvActionImpl: env.NAME, null when unset)
//   withEnv(list){}     "NAME=value" Strings only, restored afterwards
//   withCredentials(bindings){}
//                       Credentials Binding plugin: string(credentialsId:, variable:) binds a
//                       secret-text credential ("OpenID Connect id token"); file(...) writes a
//                       file credential ("... as file") under ${WORKSPACE}@tmp/secretFiles and
//                       binds its path; a missing id or a type mismatch fails like the plugin
//   sh(script|[script:, label:])
//                       recorded; with "exec": true it really runs `sh -xe script` in WORKSPACE
//                       with exactly the pipeline environment, as a Jenkins agent does
//   fileExists, readFile, archiveArtifacts, error
// Every call is recorded in RESULT.json with the step's return value or error,
// and the harness checks that no credential secret appears in any command
// line, withEnv entry, archived pattern or returned value ("leaks").
//
// CONFIG: {"vars": DIR, "step": NAME, "args": {...}, "env": {...},
//          "credentials": {ID: {"type": "string"|"file", "secret": "...", "fileName": "..."}},
//          "exec": false, "fakeOutputs": {...}}
// Without exec, sh writes "fakeOutputs" (if given) to $SIGNET_OUTPUTS, as
// signet's Jenkins adapter does, so the rest of the step can be exercised.

import groovy.json.JsonOutput
import groovy.json.JsonSlurper

class AbortException extends RuntimeException {
    AbortException(String msg) { super(msg) }
}

def cfg = new JsonSlurper().parse(new File(args[0]))
File resultFile = new File(args[1])

Map<String, String> env = new LinkedHashMap<String, String>()
(cfg.env ?: [:]).each { k, v -> env.put(k.toString(), v.toString()) }
Map creds = cfg.credentials ?: [:]
List<String> secrets = creds.values().collect { it.secret.toString() }.findAll { it }
List<Map> calls = []

def snapshotEnv = { new LinkedHashMap<String, String>(env) }
def restoreEnv = { Map<String, String> saved -> env.clear(); env.putAll(saved) }
def workspace = { new File(env.WORKSPACE ?: '.') }
def resolve = { String p -> File f = new File(p); f.isAbsolute() ? f : new File(workspace(), p) }

Binding b = new Binding()
b.setVariable('env', env)

b.setVariable('error', { String msg ->
    calls << [step: 'error', message: msg]
    throw new AbortException(msg)
})

b.setVariable('withEnv', { List overrides, Closure body ->
    overrides.each {
        if (!(it instanceof String)) {
            throw new IllegalArgumentException("withEnv wants java.lang.String entries, got ${it.getClass().name}: ${it}")
        }
        if (!it.contains('=')) {
            throw new IllegalArgumentException("withEnv entry without '=': ${it}")
        }
    }
    calls << [step: 'withEnv', vars: overrides.collect { it.toString() }]
    Map saved = snapshotEnv()
    try {
        overrides.each { String kv ->
            int i = kv.indexOf('=')
            String k = kv.substring(0, i), v = kv.substring(i + 1)
            if (v.isEmpty()) { env.remove(k) } else { env.put(k, v) }
        }
        return body.call()
    } finally {
        restoreEnv(saved)
    }
})

b.setVariable('string', { Map m -> [binding: 'string', credentialsId: m.credentialsId, variable: m.variable] })
b.setVariable('file', { Map m -> [binding: 'file', credentialsId: m.credentialsId, variable: m.variable] })

b.setVariable('withCredentials', { List bindings, Closure body ->
    calls << [step: 'withCredentials', bindings: bindings.collect { new LinkedHashMap(it) }]
    Map saved = snapshotEnv()
    List<File> tmpDirs = []
    try {
        bindings.each { Map bd ->
            def c = creds[bd.credentialsId]
            if (c == null) {
                throw new AbortException("Could not find credentials entry with ID '${bd.credentialsId}'")
            }
            String want = bd.binding == 'file' ? 'file' : 'string'
            if (c.type != want) {
                String have = c.type == 'file' ? 'OpenID Connect id token as file' : 'OpenID Connect id token'
                String expected = want == 'file' ? 'org.jenkinsci.plugins.plaincredentials.FileCredentials' :
                        'org.jenkinsci.plugins.plaincredentials.StringCredentials'
                throw new AbortException("Credentials '${bd.credentialsId}' is of type '${have}' where '${expected}' was expected")
            }
            if (want == 'file') {
                File dir = new File(workspace().path + '@tmp', "secretFiles/${UUID.randomUUID()}")
                dir.mkdirs()
                tmpDirs << dir
                File f = new File(dir, (c.fileName ?: 'id_token.txt').toString())
                f.text = c.secret.toString()
                env.put(bd.variable.toString(), f.path)
            } else {
                env.put(bd.variable.toString(), c.secret.toString())
            }
        }
        return body.call()
    } finally {
        tmpDirs.each { it.deleteDir() }
        restoreEnv(saved)
    }
})

b.setVariable('sh', { arg ->
    Map m = arg instanceof Map ? arg : [script: arg.toString()]
    Map call = [step: 'sh', script: m.script.toString(), label: m.label, env: snapshotEnv()]
    calls << call
    if (cfg.exec) {
        File scriptFile = File.createTempFile('script', '.sh')
        scriptFile.text = m.script.toString()
        try {
            ProcessBuilder pb = new ProcessBuilder(['sh', '-xe', scriptFile.path])
            pb.directory(workspace())
            pb.environment().clear()
            pb.environment().putAll(env)
            pb.redirectErrorStream(true)
            Process p = pb.start()
            String out = p.inputStream.getText('UTF-8')
            int rc = p.waitFor()
            call.output = out
            call.exitCode = rc
            System.err.print(out)
            if (rc != 0) {
                throw new AbortException("script returned exit code ${rc}")
            }
        } finally {
            scriptFile.delete()
        }
    } else if (cfg.fakeOutputs != null && env.SIGNET_OUTPUTS) {
        File out = resolve(env.SIGNET_OUTPUTS)
        out.parentFile.mkdirs()
        out.text = JsonOutput.toJson(cfg.fakeOutputs)
    }
    return null
})

b.setVariable('fileExists', { String p ->
    boolean ok = resolve(p).exists()
    calls << [step: 'fileExists', file: p, result: ok]
    return ok
})

b.setVariable('readFile', { arg ->
    Map m = arg instanceof Map ? arg : [file: arg.toString()]
    calls << [step: 'readFile', file: m.file, encoding: m.encoding]
    return resolve(m.file.toString()).getText((m.encoding ?: 'UTF-8').toString())
})

b.setVariable('archiveArtifacts', { Map m ->
    calls << [step: 'archiveArtifacts', args: new LinkedHashMap(m)]
    m.artifacts.toString().split(',').each { String pat ->
        pat = pat.trim()
        if (!pat.contains('*') && !m.allowEmptyArchive && !resolve(pat).isFile()) {
            throw new AbortException("No artifacts found that match the file pattern \"${pat}\". Configuration error?")
        }
    }
    return null
})

Map result = [calls: calls]
try {
    // Jenkins compiles library scripts with @NonCPS (com.cloudbees.groovy.cps.NonCPS)
    // imported by default; supply the same annotation and import.
    GroovyClassLoader gcl = new GroovyClassLoader(this.class.classLoader)
    gcl.parseClass('package com.cloudbees.groovy.cps\n' +
            'import java.lang.annotation.*\n' +
            '@Retention(RetentionPolicy.RUNTIME) @Target(ElementType.METHOD) @interface NonCPS {}\n')
    def cc = new org.codehaus.groovy.control.CompilerConfiguration()
    cc.addCompilationCustomizers(new org.codehaus.groovy.control.customizers.ImportCustomizer()
            .addImports('com.cloudbees.groovy.cps.NonCPS'))
    def step = new GroovyShell(gcl, b, cc).parse(new File(cfg.vars.toString(), "${cfg.step}.groovy"))
    def ret = step.call(cfg.args ?: [:])
    result.result = ret
} catch (AbortException e) {
    result.error = e.message
} catch (Throwable e) {
    result.error = e.toString()
    result.unexpected = true
}

// The secret must never appear where Jenkins would show or log it.
List<String> leaks = []
calls.each { c ->
    List<String> visible = []
    if (c.step == 'sh') { visible << c.script }
    if (c.step == 'withEnv') { visible.addAll(c.vars) }
    if (c.step == 'archiveArtifacts') { visible << c.args.toString() }
    if (c.step == 'error') { visible << c.message }
    visible.each { v -> secrets.each { s -> if (v.contains(s)) { leaks << "${c.step}: ${v}".toString() } } }
}
secrets.each { s -> if (JsonOutput.toJson(result.result).contains(s)) { leaks << 'returned value' } }
result.leaks = leaks
resultFile.text = JsonOutput.prettyPrint(JsonOutput.toJson(result))
System.exit(!leaks.isEmpty() ? 3 : (result.unexpected ? 4 : 0))
