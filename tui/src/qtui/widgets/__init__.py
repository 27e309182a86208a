"""qtui widgets, grouped by feature: chrome (status bar, banner), tables, charts."""
