// Turns a node's WhyReport (journal snapshots) into what `meshd why` prints: text, blame and Graphviz per slot.

import type { WhyView } from '../api/types.ts';
import { renderBlame, renderDot, renderText, STATE_MARKERS } from '../lifecycle/why-report.ts';
import type { WhyReport } from './pod-agent.ts';

export function whyView(report: WhyReport, extra: { unreachable?: string } = {}): WhyView {
  return {
    pod: report.pod,
    node: report.node,
    summary: report.summary,
    ...(report.placement === undefined ? {} : { placement: report.placement }),
    ...(extra.unreachable === undefined ? {} : { unreachable: extra.unreachable }),
    slots: report.slots.map((s) => ({
      slot: s.slot,
      phase: s.phase,
      summary: s.summary,
      text: s.snapshot === undefined ? '' : renderText(s.snapshot),
      blame: s.snapshot === undefined ? '' : renderBlame(s.snapshot),
      dot: s.snapshot === undefined ? '' : renderDot(s.snapshot),
    })),
    markers: STATE_MARKERS,
    report,
  };
}
