// The page's two DOM helpers: an element by its id, and a new element with its children.

export const $ = (id) => document.getElementById(id);

// A new element with properties and children (nodes or text).
export function el(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children); // numbers and strings become text
  return node;
}
