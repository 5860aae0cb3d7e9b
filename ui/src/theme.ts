// Light/dark theme: the system's preference unless the user picked one, which localStorage remembers (the theme only).
const KEY = 'postern.theme';
export type Theme = 'light' | 'dark';

export function storedTheme(): Theme | null {
  try {
    const value = localStorage.getItem(KEY);
    return value === 'light' || value === 'dark' ? value : null;
  } catch {
    return null;
  }
}

export function currentTheme(): Theme {
  const set = document.documentElement.getAttribute('data-theme');
  if (set === 'light' || set === 'dark') return set;
  return window.matchMedia('(prefers-color-scheme: dark)').matches ? 'dark' : 'light';
}

export function applyTheme(theme: Theme | null, remember = false) {
  if (theme) document.documentElement.setAttribute('data-theme', theme);
  else document.documentElement.removeAttribute('data-theme');
  if (remember && theme) {
    try {
      localStorage.setItem(KEY, theme);
    } catch {
      // storage disabled: the choice lasts for this page only
    }
  }
}
