"""Stream processing: the Faust app, its topics and agents."""
