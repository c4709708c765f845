"""Tables made k-anonymous, l-diverse and t-close: Mondrian and full-domain generalisation."""
