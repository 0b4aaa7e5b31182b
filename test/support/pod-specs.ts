// Pod specs (as the YAML a user writes) for tests that only need some pod to exist.

/** A pod whose one container sleeps for an hour; `env` adds environment variables (quoted as given). */
export function sleeperPodYaml(name: string, env: Record<string, string> = {}): string {
  const vars = Object.entries(env).map(([k, v]) => `${k}: "${v}"`);
  return `kind: Pod
name: ${name}
spec:
  containers:
    - name: app
      command: [sleep, "3600"]
${vars.length > 0 ? `      env: { ${vars.join(', ')} }\n` : ''}`;
}
