"""Alert notification: from alert events to grouped, silenced, rendered notifications."""
