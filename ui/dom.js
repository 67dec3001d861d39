// Building the page's elements: text is appended as text nodes, never parsed as HTML.

/** A `name` element with `className` (if any) and `children` (nodes, or strings as text). */
export function el(name, className, ...children) {
  const node = document.createElement(name);
  if (className) node.className = className;
  node.append(...children);
  return node;
}
