// @ts-check
// Small DOM helpers shared by the pages.

/** The stage id (last part of a stage ARN) for display. @param {string | undefined | null} arn */
export const stageId = (arn) => (arn || '').split('/').pop() || '';

/**
 * Makes an element: el('td', {class: 'x'}, child, 'text').
 * @param {string} tag
 * @param {Record<string, string | number | undefined | null>} [attrs]
 * @param {...(Node | string | number | undefined | null | (Node | string)[])} children
 */
export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null) continue;
    if (k === 'class') e.className = String(v);
    else if (k === 'style') e.style.cssText = String(v);
    else e.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

/** A state badge, styled by `.s-<state>`. @param {string} state */
export const badge = (state) => el('span', { class: `badge s-${state}` }, state);
