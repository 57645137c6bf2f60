class LeaderBot: pass
