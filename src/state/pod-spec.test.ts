// Tests for pod spec validation: messages name file, field path, line:col and a suggestion; quantities; stored form.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ValidationError } from '../shared/errors.ts';
import {
  didYouMean,
  maxSpecBytes,
  parseCpu,
  parseMemory,
  parsePodSpec,
  podFromStored,
  storedPodProblem,
  toStoredPod,
} from './pod-spec.ts';

const example = `kind: Pod
name: web
spec:
  containers:
    - name: app
      command: [python3, -m, http.server, "\${PORT_HTTP}"]
      env: { GREETING: hello }
      ports: [{ name: http }]
      resources: { cpu: 0.25, memory: 64Mi }
  restartPolicy: always          # always | on-failure | never
  availability: best-effort      # ha | best-effort
  replicas: 1
  placement: { host: nas }       # or { labels: { zone: home } }
`;

function validationError(fn: () => unknown): ValidationError {
  try {
    fn();
  } catch (err) {
    if (err instanceof ValidationError) return err;
    throw err;
  }
  assert.fail('expected a ValidationError');
}

/** The ValidationError parsing `yaml` (as file `file`) throws. */
function specError(yaml: string, file: string): ValidationError {
  return validationError(() => parsePodSpec(yaml, file));
}

describe('parsePodSpec', () => {
  it('accepts the example from the issue and fills defaults', () => {
    const pod = parsePodSpec(example, 'web.yaml');
    assert.equal(pod.name, 'web');
    assert.deepEqual(pod.spec.placement, { host: 'nas' });
    assert.deepEqual(pod.spec.containers[0]?.resources, { cpu: 0.25, memory: '64Mi' });
    const minimal = parsePodSpec(
      'kind: Pod\nname: a\nspec:\n  containers: [{ name: c, command: [sleep, "1"] }]\n',
      'a.yaml',
    );
    assert.equal(minimal.spec.restartPolicy, 'always');
    assert.equal(minimal.spec.availability, 'best-effort');
    assert.equal(minimal.spec.replicas, 1);
  });

  it('accepts the optional fields: args, health probes, haGraceSeconds, security', () => {
    const pod = parsePodSpec(
      `kind: Pod
name: db
spec:
  availability: ha
  haGraceSeconds: 30
  placement: { labels: { zone: home, example.com/disk: ssd } }
  security: { hostNetwork: false, hostPaths: [{ path: /srv/db, readOnly: true }], devices: [/dev/fuse], capabilities: [NET_BIND_SERVICE], unsandboxed: false }
  containers:
    - name: db
      command: [postgres]
      args: [-p, "\${PORT_PG}"]
      ports: [{ name: pg }, { name: metrics }]
      resources: { cpu: "500m", memory: 1Gi }
      health: { tcp: { port: pg }, intervalSeconds: 5, timeoutSeconds: 1 }
    - name: exporter
      command: [exporter]
      health: { exec: { command: [/bin/true] } }
`,
      'db.yaml',
    );
    assert.equal(pod.spec.haGraceSeconds, 30);
    assert.deepEqual(pod.spec.security?.hostPaths, [{ path: '/srv/db', readOnly: true }]);
    assert.deepEqual(pod.spec.containers[1]?.health, {
      exec: { command: ['/bin/true'] },
      intervalSeconds: 10,
      timeoutSeconds: 2,
    });
  });

  it('reports every problem with file, field path, line:col and "did you mean"', () => {
    const err = specError(
      `kind: Pod
name: web
spec:
  containers:
    - name: app
      comand: [python3]
      ports: [{ nme: http }]
      resources: { memory: 64Mb }
  restartPolicy: alway
  replicas: 0
`,
      'web.yaml',
    );
    assert.equal(err.code, 'E_SPEC_INVALID');
    assert.match(err.message, /^web\.yaml: 5 problems in the pod spec:/);
    assert.match(
      err.message,
      /web\.yaml:6:7 spec\.containers\[0\]\.comand: unknown field "comand" \(did you mean "command"\?\)/,
    );
    assert.match(
      err.message,
      /web\.yaml:7:17 spec\.containers\[0\]\.ports\[0\]\.nme: unknown field "nme" \(did you mean "name"\?\)/,
    );
    assert.match(
      err.message,
      /web\.yaml:8:28 spec\.containers\[0\]\.resources\.memory: expected bytes or a quantity such as 64Mi/,
    );
    assert.match(
      err.message,
      /web\.yaml:9:18 spec\.restartPolicy: expected one of always \| on-failure \| never, got "alway" \(did you mean "always"\?\)/,
    );
    assert.match(err.message, /web\.yaml:10:13 spec\.replicas: expected a whole number from 1 to 1000/);
    assert.doesNotMatch(err.message, /missing required field "command"/, 'a misspelt field is reported once');
    assert.deepEqual(
      {
        file: err.details?.file,
        path: err.details?.path,
        line: err.details?.line,
        column: err.details?.column,
      },
      { file: 'web.yaml', path: 'spec.containers[0].comand', line: 6, column: 7 },
    );
    assert.match(err.hint ?? '', /web\.yaml/);
  });

  it('points a missing field at its parent and checks references across containers', () => {
    const err = specError(
      `kind: Pod
name: web
spec:
  containers:
    - name: app
      command: [serve, --port, "\${PORT_HTPP}"]
      ports: [{ name: http }]
      health: { http: { port: htp } }
    - name: app
`,
      'web.yaml',
    );
    assert.match(
      err.message,
      /web\.yaml:6:32 spec\.containers\[0\]\.command\[2\]: \$\{PORT_HTPP\} names no declared port \(did you mean \$\{PORT_HTTP\}\?\)/,
    );
    assert.match(
      err.message,
      /web\.yaml:8:31 spec\.containers\[0\]\.health\.http\.port: port "htp" is not declared by this container \(did you mean "http"\?\)/,
    );
    assert.match(
      err.message,
      /web\.yaml:9:7 spec\.containers\[1\]\.command: missing required field "command"/,
    );
    assert.match(
      err.message,
      /web\.yaml:9:13 spec\.containers\[1\]\.name: container name "app" is already used by spec\.containers\[0\]/,
    );
  });

  it('gives line and column of YAML syntax errors', () => {
    const err = specError('kind: Pod\nname: web\nspec:\n  containers: [\n    { name: a\n', 'bad.yaml');
    assert.equal(err.code, 'E_SPEC_SYNTAX');
    assert.match(err.message, /^bad\.yaml:\d+:\d+ syntax error: /);
    assert.equal(typeof err.details?.line, 'number');
    const dup = specError('kind: Pod\nname: a\nname: b\n', 'dup.yaml');
    assert.match(dup.message, /dup\.yaml:3:1 syntax error: Map keys must be unique/);
    const multi = specError('kind: Pod\n---\nkind: Pod\n', 'multi.yaml');
    assert.match(multi.message, /one pod per file/);
  });

  it('reads JSON with positions too', () => {
    const err = specError(
      '{\n  "kind": "Pod",\n  "name": "web",\n  "spec": { "containers": [], "replica": 2 }\n}',
      'web.json',
    );
    assert.match(
      err.message,
      /web\.json:4:27 spec\.containers: expected a list of at least one container, got an empty list/,
    );
    assert.match(
      err.message,
      /web\.json:4:31 spec\.replica: unknown field "replica" \(did you mean "replicas"\?\)/,
    );
  });

  it('refuses specs over the size limit before parsing', () => {
    const big = `${example}# ${'x'.repeat(maxSpecBytes)}\n`;
    const err = specError(big, 'big.yaml');
    assert.equal(err.code, 'E_SPEC_TOO_LARGE');
    assert.match(err.message, /big\.yaml is \d+ bytes; a pod spec may be at most 65536 bytes/);
  });

  it('refuses empty files, metadata and non-Pod kinds with a pointer', () => {
    assert.equal(specError('# nothing\n', 'e.yaml').code, 'E_SPEC_EMPTY');
    const err = specError('kind: pod\nmetadata: { name: web }\nspec: {}\n', 'k.yaml');
    assert.match(err.message, /k\.yaml:1:7 kind: expected "Pod", got "pod" \(did you mean "Pod"\?\)/);
    assert.match(
      err.message,
      /k\.yaml:2:1 metadata: unknown field "metadata" \(meshd has no metadata: put "name" at the top level\)/,
    );
    assert.match(err.message, /k\.yaml:1:1 name: missing required field "name"/);
  });
});

describe('quantities', () => {
  it('parses memory to bytes', () => {
    assert.equal(parseMemory('64Mi'), 64 * 2 ** 20);
    assert.equal(parseMemory('1Gi'), 2 ** 30);
    assert.equal(parseMemory('500M'), 500_000_000);
    assert.equal(parseMemory('1.5Gi'), 1.5 * 2 ** 30);
    assert.equal(parseMemory(1048576), 1048576);
    assert.equal(parseMemory('2048'), 2048);
    for (const bad of ['64Mb', '-1', 'lots', '', 0, 1.5, '1e3'])
      assert.equal(parseMemory(bad), undefined, String(bad));
  });

  it('parses cpu to millicores', () => {
    assert.equal(parseCpu(0.25), 250);
    assert.equal(parseCpu('250m'), 250);
    assert.equal(parseCpu('2'), 2000);
    assert.equal(parseCpu(1), 1000);
    for (const bad of [0, -1, '0m', 'lots', 0.0001, '1.5m'])
      assert.equal(parseCpu(bad), undefined, String(bad));
  });

  it('suggests near names only', () => {
    assert.equal(didYouMean('replica', ['replicas', 'restartPolicy']), 'replicas');
    assert.equal(didYouMean('restartpolicy', ['replicas', 'restartPolicy']), 'restartPolicy');
    assert.equal(didYouMean('nev', ['env', 'name']), 'env');
    assert.equal(didYouMean('volumes', ['replicas', 'restartPolicy']), undefined);
  });
});

describe('stored form', () => {
  it('keys containers by name and converts back exactly', () => {
    const pod = parsePodSpec(
      'kind: Pod\nname: web\nspec:\n  containers:\n    - { name: b, command: [x] }\n    - { name: a, command: [y], env: { K: v } }\n',
      'web.yaml',
    );
    const stored = toStoredPod(pod);
    assert.deepEqual(Object.keys((stored.spec as { containers: object }).containers), ['b', 'a']);
    assert.deepEqual((stored.spec as { containers: Record<string, unknown> }).containers.a, {
      command: ['y'],
      env: { K: 'v' },
      order: 1,
    });
    assert.deepEqual(podFromStored(stored), pod);
    assert.equal(storedPodProblem('pod/web', stored), undefined);
  });

  it('explains why a stored object is invalid', () => {
    const stored = toStoredPod(parsePodSpec(example, 'web.yaml'));
    assert.match(storedPodProblem('pod/api', stored) ?? '', /name: expected "api"/);
    const bad = { ...stored, spec: { ...(stored.spec as object), replicas: 0 } };
    assert.match(
      storedPodProblem('pod/web', bad) ?? '',
      /^invalid pod: spec\.replicas: expected a whole number/,
    );
    assert.match(
      storedPodProblem('pod/web', { ...stored, status: { restarts: -1 } }) ?? '',
      /status\.restarts/,
    );
    assert.match(
      storedPodProblem('pod/web', { status: { phase: 'running' } }) ?? '',
      /missing required field "kind"/,
    );
  });
});
