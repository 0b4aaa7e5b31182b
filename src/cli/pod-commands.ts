// Commands for pods as versioned objects: apply, get, describe, edit, delete, history, diff, rollback, controllers.

import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { hostname, tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { ApiClient, type PodEntry, type RevisionView } from '../api/client.ts';
import { DataDir } from '../daemon/data-dir.ts';
import { isMeshdError, UsageError, ValidationError } from '../shared/errors.ts';
import { expectPositionals, type Parsed, parseCommand, stringFlag } from './args.ts';
import { type Command, emit } from './main.ts';
import { renderTable } from './table.ts';
import { unifiedDiff } from './text-diff.ts';

function client(p: Parsed): ApiClient {
  const dir = new DataDir(p.dataDir);
  return new ApiClient({ socketPath: dir.socketPath, dataDir: dir.path });
}

/** `--as NAME`, else `$USER@host`: who the revision is attributed to. */
function actorOf(p: Parsed): string {
  const explicit = stringFlag(p, 'as');
  if (explicit !== undefined) return explicit;
  let user = process.env.USER;
  if (user === undefined || user === '') {
    try {
      user = userInfo().username;
    } catch {
      user = 'unknown';
    }
  }
  return `${user}@${hostname()}`;
}

const writeFlags = { as: { type: 'string' }, message: { type: 'string', short: 'm' } } as const;

function writeRequest(p: Parsed): { actor: string; message?: string } {
  const message = stringFlag(p, 'message');
  return { actor: actorOf(p), ...(message === undefined ? {} : { message }) };
}

/** `pod NAME` after the verb: the kind word is required, as in `meshd history pod web`. */
function podName(command: string, p: Parsed): string {
  const [kind, name] = p.positionals;
  if (kind !== 'pod' && kind !== 'pods') {
    throw new UsageError(
      `${command}: expected "pod NAME", got ${JSON.stringify(p.positionals.join(' '))}`,
      `Usage: meshd ${command} pod NAME`,
    );
  }
  if (name === undefined || p.positionals.length > 2)
    throw new UsageError(`${command}: give one pod name`, `Usage: meshd ${command} pod NAME`);
  return name;
}

function readSpec(file: string): { text: string; file: string } {
  if (file === '-') return { text: fs.readFileSync(0, 'utf8'), file: '<stdin>' };
  try {
    return { text: fs.readFileSync(file, 'utf8'), file };
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new ValidationError(
      'E_SPEC_UNREADABLE',
      `cannot read ${file}: ${code === 'ENOENT' ? 'no such file' : (err as Error).message}`,
      {
        hint: 'Give the path of a pod spec (YAML or JSON), or - to read it from stdin.',
      },
    );
  }
}

const apply: Command = {
  words: ['apply'],
  usage: 'apply -f FILE|- [--message WHY] [--as NAME]',
  summary: 'create or change a pod from any peer; an identical spec makes no revision',
  async run(argv, ctx) {
    const p = parseCommand('apply', argv, { ...writeFlags, filename: { type: 'string', short: 'f' } });
    expectPositionals('apply', p, []);
    const file = stringFlag(p, 'filename');
    if (file === undefined) throw new UsageError('apply: -f FILE is required (use -f - for stdin)');
    const res = await client(p).apply({ ...readSpec(file), ...writeRequest(p) });
    emit(ctx, p.output, res, () =>
      res.changed
        ? `pod/${res.name} applied: revision ${res.revision}`
        : `pod/${res.name} unchanged (revision ${res.revision})`,
    );
    return 0;
  },
};

/** One row per pod slot: what `get pods` prints. */
export function podsTable(pods: PodEntry[]): string {
  if (pods.length === 0) return 'no pods';
  return renderTable(
    ['NAME', 'SLOT', 'PHASE', 'NODE', 'REVISION', 'AVAILABILITY', 'RESTARTS'],
    pods.map((e) => [
      e.name,
      `${e.slot}/${e.replicas}`,
      e.phase,
      e.node ?? '-',
      e.runningRevision !== null && e.runningRevision !== e.revision
        ? `${e.revision} (runs ${e.runningRevision})`
        : e.revision,
      e.availability,
      String(e.restarts),
    ]),
  );
}

const getPods: Command = {
  words: ['get', 'pods'],
  usage: 'get pods [-o json|yaml]',
  summary: 'every pod slot: phase, node, revision, availability',
  async run(argv, ctx) {
    const p = parseCommand('get pods', argv, {});
    expectPositionals('get pods', p, []);
    const pods = await client(p).pods();
    emit(ctx, p.output, pods, () => podsTable(pods));
    return 0;
  },
};

/** `alice×40, bob×10, others×3` for a row of dropped revisions. */
function droppedAuthors(d: NonNullable<RevisionView['dropped']>): string {
  const named = d.by.map((b) => `${b.actor}×${b.count}`);
  const rest = d.count - d.by.reduce((n, b) => n + b.count, 0);
  return [...named, ...(rest > 0 ? [`others×${rest}`] : [])].join(', ');
}

function historyTable(revs: RevisionView[]): string {
  return renderTable(
    ['REVISION', 'KIND', 'AUTHOR', 'HOST', 'AT', 'MESSAGE'],
    revs.map((r) => [
      `${r.revision}${r.concurrent ? ' (concurrent)' : ''}${r.rejected !== undefined ? ' REJECTED' : ''}${
        r.restorable === true ? ' (compacted, restorable)' : r.compacted ? ' (compacted)' : ''
      }`,
      r.kind,
      r.dropped === undefined ? r.author.actor : droppedAuthors(r.dropped),
      r.author.host,
      r.at.replace('T', ' ').replace(/\.\d+Z$/, 'Z'),
      r.rejected !== undefined ? `rejected: ${r.rejected}` : (r.message ?? ''),
    ]),
  );
}

const describePod: Command = {
  words: ['describe'],
  usage: 'describe pod NAME [-o json]',
  summary: 'a pod: its spec, status per slot and last revisions',
  async run(argv, ctx) {
    const p = parseCommand('describe', argv, {});
    const d = await client(p).describePod(podName('describe', p));
    emit(ctx, p.output, d, () =>
      [
        `Name:      ${d.name}`,
        `Revision:  ${d.revision}`,
        '',
        'Slots:',
        podsTable(d.slots).replace(/^/gm, '  '),
        ...d.slots
          .filter((s) => s.lastError !== null)
          .map((s) => `  slot ${s.slot} last error: ${s.lastError}`),
        '',
        'Spec:',
        d.spec.trimEnd().replace(/^/gm, '  '),
        '',
        'Revisions:',
        historyTable(d.revisions).replace(/^/gm, '  '),
      ].join('\n'),
    );
    return 0;
  },
};

const deletePod: Command = {
  words: ['delete'],
  usage: 'delete pod NAME [--message WHY] [--as NAME]',
  summary: 'delete a pod (a tombstone revision: its history stays readable)',
  async run(argv, ctx) {
    const p = parseCommand('delete', argv, writeFlags);
    const res = await client(p).deletePod(podName('delete', p), writeRequest(p));
    emit(ctx, p.output, res, () => `pod/${res.name} deleted (revision ${res.revision})`);
    return 0;
  },
};

const history: Command = {
  words: ['history'],
  usage: 'history pod NAME [--author A] [--exclude-author B] [--kind user|system|rollback|delete] [-o json]',
  summary: 'every revision with who made it, from any peer',
  async run(argv, ctx) {
    const p = parseCommand('history', argv, {
      author: { type: 'string' },
      'exclude-author': { type: 'string' },
      kind: { type: 'string' },
    });
    const kind = stringFlag(p, 'kind');
    if (kind !== undefined && !['user', 'system', 'rollback', 'delete'].includes(kind)) {
      throw new UsageError(
        `history: --kind must be user, system, rollback or delete, not ${JSON.stringify(kind)}`,
      );
    }
    const author = stringFlag(p, 'author');
    const exclude = stringFlag(p, 'exclude-author');
    const revs = await client(p).history(podName('history', p), {
      ...(author === undefined ? {} : { author }),
      ...(exclude === undefined ? {} : { excludeAuthor: exclude }),
      ...(kind === undefined ? {} : { kind: kind as 'user' }),
    });
    emit(ctx, p.output, revs, () => (revs.length === 0 ? 'no matching revisions' : historyTable(revs)));
    return 0;
  },
};

const diff: Command = {
  words: ['diff'],
  usage: 'diff pod NAME [--from N] [--to M]',
  summary: 'what changed between two revisions (default: the last two)',
  async run(argv, ctx) {
    const p = parseCommand('diff', argv, { from: { type: 'string' }, to: { type: 'string' } });
    const from = stringFlag(p, 'from');
    const to = stringFlag(p, 'to');
    const d = await client(p).diff(podName('diff', p), from, to);
    emit(ctx, p.output, d, () => {
      const text = unifiedDiff(d.from.text, d.to.text, {
        from: `pod/${d.name} revision ${d.from.revision}`,
        to: `pod/${d.name} revision ${d.to.revision}`,
      });
      return text === '' ? `revisions ${d.from.revision} and ${d.to.revision} have the same spec` : text;
    });
    return 0;
  },
};

const rollback: Command = {
  words: ['rollback'],
  usage: 'rollback pod NAME [--to N] [--message WHY] [--as NAME]',
  summary: 'a new revision equal to revision N (default: the previous one)',
  async run(argv, ctx) {
    const p = parseCommand('rollback', argv, { ...writeFlags, to: { type: 'string' } });
    const to = stringFlag(p, 'to');
    const res = await client(p).rollback(podName('rollback', p), {
      ...writeRequest(p),
      ...(to === undefined ? {} : { to }),
    });
    emit(ctx, p.output, res, () =>
      res.changed
        ? `pod/${res.name} rolled back: revision ${res.revision}`
        : `pod/${res.name} already equals that revision (revision ${res.revision})`,
    );
    return 0;
  },
};

const edit: Command = {
  words: ['edit'],
  usage: 'edit pod NAME [--message WHY] [--as NAME]',
  summary: 'open $EDITOR on the live spec; saving makes a new revision (errors reopen the editor)',
  async run(argv, ctx) {
    const p = parseCommand('edit', argv, writeFlags);
    const name = podName('edit', p);
    const api = client(p);
    const live = await api.podSpec(name);
    const dir = fs.mkdtempSync(join(tmpdir(), 'meshd-edit-'));
    const file = join(dir, `${name}.yaml`);
    try {
      let text = live.text;
      let errorHeader = '';
      for (;;) {
        fs.writeFileSync(file, errorHeader + text);
        runEditor(file);
        const edited = stripErrorHeader(fs.readFileSync(file, 'utf8'));
        if (edited.trim() === '' || edited === text) {
          ctx.err(
            errorHeader === ''
              ? 'edit cancelled: no changes'
              : 'edit cancelled: the spec was left as it was; nothing applied',
          );
          return errorHeader === '' ? 0 : 1;
        }
        try {
          const res = await api.apply({
            text: edited,
            file: `pod/${name} (edited)`,
            expectName: name,
            ...writeRequest(p),
          });
          ctx.out(
            res.changed ? `pod/${res.name} edited: revision ${res.revision}` : `pod/${res.name} unchanged`,
          );
          return 0;
        } catch (err) {
          if (!isMeshdError(err) || err.code === 'E_NOT_RUNNING') throw err;
          // like kubectl edit: reopen the file with the error on top
          text = edited;
          errorHeader = `${[
            '# meshd: the spec was NOT applied:',
            ...err.message.split('\n').map((l) => `#   ${l}`),
            ...(err.hint === undefined ? [] : [`#   hint: ${err.hint}`]),
            '# Fix it and save, or save it unchanged to cancel.',
          ].join('\n')}\n`;
        }
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  },
};

function runEditor(file: string): void {
  const editor = process.env.VISUAL || process.env.EDITOR || 'vi';
  // Through a shell, so EDITOR may carry arguments ("code --wait").
  const res = spawnSync('/bin/sh', ['-c', `${editor} "$1"`, 'meshd-edit', file], { stdio: 'inherit' });
  if (res.error !== undefined || res.status !== 0) {
    throw new UsageError(
      `the editor (${editor}) failed${res.status === null ? '' : ` with exit code ${res.status}`}`,
      'Set EDITOR to a working editor.',
    );
  }
}

function stripErrorHeader(text: string): string {
  const lines = text.split('\n');
  let i = 0;
  while (i < lines.length && (lines[i] ?? '').startsWith('# meshd:')) {
    i++;
    while (i < lines.length && (lines[i] ?? '').startsWith('#')) i++;
  }
  return lines.slice(i).join('\n');
}

const controllers: Command = {
  words: ['controllers'],
  usage: 'controllers [--check] [-o json]',
  summary: 'who owns and who reads which fields; --check reports read→write cycles',
  async run(argv, ctx) {
    const p = parseCommand('controllers', argv, { check: { type: 'boolean' } });
    expectPositionals('controllers', p, []);
    const view = await client(p).controllers();
    if (p.values.check === true) {
      emit(ctx, p.output, { cycles: view.cycles }, () =>
        view.cycles.length === 0
          ? 'no read→write cycles between controllers'
          : view.cycles.map((c) => `cycle: ${c}`).join('\n'),
      );
      return view.cycles.length === 0 ? 0 : 1;
    }
    emit(ctx, p.output, view.controllers, () =>
      renderTable(
        ['CONTROLLER', 'OWNS', 'READS'],
        view.controllers.map((c) => [c.name, c.owns.join(', '), c.reads.join(', ') || '-']),
      ),
    );
    return 0;
  },
};

const why: Command = {
  words: ['why'],
  usage: 'why pod NAME [--blame] [--dot] [-o json]',
  summary:
    "the pod's lifecycle graph: what is done, running, waiting, failed — asked of the node that runs it",
  async run(argv, ctx) {
    const p = parseCommand('why', argv, { blame: { type: 'boolean' }, dot: { type: 'boolean' } });
    const view = await client(p).why(podName('why', p));
    if (p.output !== 'text') {
      emit(ctx, p.output, view, () => '');
      return 0;
    }
    if (p.values.dot === true) {
      ctx.out(view.slots.map((s) => s.dot).join('\n'));
      return 0;
    }
    const lines = [view.summary];
    if (view.unreachable !== undefined) lines.push(`(${view.unreachable})`);
    if (view.placement !== undefined && view.placement !== view.summary) lines.push(view.placement);
    for (const s of view.slots) {
      const body = p.values.blame === true ? s.blame : s.text;
      if (body !== '') lines.push('', `slot ${s.slot} on ${view.node} (${s.phase}):`, body.trimEnd());
    }
    ctx.out(lines.join('\n'));
    return 0;
  },
};

const logs: Command = {
  words: ['logs'],
  usage: 'logs pod NAME [-c CONTAINER] [--slot N] [--stderr] [-f] [--tail N]',
  summary: "a container's output, streamed from the node that runs it",
  async run(argv, ctx) {
    const p = parseCommand('logs', argv, {
      container: { type: 'string', short: 'c' },
      slot: { type: 'string' },
      stderr: { type: 'boolean' },
      follow: { type: 'boolean', short: 'f' },
      tail: { type: 'string' },
    });
    const name = podName('logs', p);
    const whole = (flag: string): number | undefined => {
      const v = stringFlag(p, flag);
      if (v === undefined) return undefined;
      if (!/^\d+$/.test(v))
        throw new UsageError(`logs: --${flag} must be a whole number, not ${JSON.stringify(v)}`);
      return Number(v);
    };
    const container = stringFlag(p, 'container');
    const slot = whole('slot');
    const tail = whole('tail');
    const abort = new AbortController();
    const stop = () => abort.abort();
    process.once('SIGINT', stop);
    try {
      await client(p).logs(
        name,
        {
          ...(container === undefined ? {} : { container }),
          ...(slot === undefined ? {} : { slot }),
          ...(tail === undefined ? {} : { tail }),
          ...(p.values.stderr === true ? { stream: 'stderr' as const } : {}),
          ...(p.values.follow === true ? { follow: true } : {}),
        },
        (line) => ctx.out(line),
        abort.signal,
      );
    } finally {
      process.off('SIGINT', stop);
    }
    return 0;
  },
};

export const podCommands: Command[] = [
  apply,
  getPods,
  describePod,
  edit,
  deletePod,
  history,
  diff,
  rollback,
  why,
  logs,
  controllers,
];
