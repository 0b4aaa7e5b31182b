// Building DOM and SVG nodes without innerHTML: text from the daemon always goes in as text, never as markup.

const svgNs = 'http://www.w3.org/2000/svg';

function build(el, attrs, children) {
  for (const [key, value] of Object.entries(attrs ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children.flat(Number.POSITIVE_INFINITY)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** An HTML element: `h('a', { href: '#/pods' }, 'Pods')`. */
export function h(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

/** An SVG element. */
export function svg(tag, attrs, ...children) {
  return build(document.createElementNS(svgNs, tag), attrs, children);
}

/**
 * Replaces the content of `container` with `nodes`, keeping keyboard focus on the element with the same
 * `data-focus-key` (live refreshes re-render often; focus must not jump to the top of the page).
 */
export function replaceKeepingFocus(container, ...nodes) {
  const active = document.activeElement;
  const key =
    active instanceof HTMLElement || active instanceof SVGElement ? active.dataset.focusKey : undefined;
  const inside = active !== null && container.contains(active);
  container.replaceChildren(
    ...nodes.flat(Number.POSITIVE_INFINITY).filter((n) => n !== null && n !== undefined && n !== false),
  );
  if (inside && key !== undefined) {
    const again = container.querySelector(`[data-focus-key="${CSS.escape(key)}"]`);
    if (again instanceof HTMLElement || again instanceof SVGElement) again.focus();
  }
}

/** "3.2 s ago" for a duration in ms (null: never). */
export function ago(ms) {
  if (ms === null || ms === undefined) return 'never';
  if (ms < 1000) return `${Math.round(ms)} ms ago`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s ago`;
  if (ms < 3_600_000) return `${Math.round(ms / 60_000)} min ago`;
  return `${Math.round(ms / 3_600_000)} h ago`;
}
