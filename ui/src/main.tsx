// Entry point: applies the remembered theme before the first paint of the app, then mounts it.
import { render } from 'preact';
import './style.css';
import { App } from './app';
import { applyTheme, storedTheme } from './theme';

applyTheme(storedTheme());
render(<App />, document.getElementById('app')!);
