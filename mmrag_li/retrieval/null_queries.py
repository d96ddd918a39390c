"""The unrelated queries that calibrate retrievers (:mod:`mmrag_li.retrieval.calibration`).

Generic questions, keywords, identifiers and prose about nothing in particular, ~30 in each length
bin (short <= 4 tokens, medium 5-9, long >= 10). They are deliberately NOT descriptions of
pictures: the image and caption retrievers should stay confident for visual queries. A few of them
will match something in any store by chance; the calibration uses the 95th percentile, which
tolerates that.
"""

from __future__ import annotations

from typing import Tuple

NULL_QUERIES: Tuple[str, ...] = (
    # short (<= 4 tokens): keywords, identifiers, names
    "weather tomorrow", "football results", "cheap flights", "parking permit", "opening hours",
    "password reset", "vacation days", "order number 83452", "ticket 7731", "booking reference QZ-5521",
    "tax return", "school holidays", "train delay", "pension scheme", "room 314", "customer feedback",
    "meeting agenda", "shoe size", "case 2291-B", "flu symptoms", "library card", "chess openings",
    "election turnout", "wifi password", "quarterly report", "volunteer shift", "membership renewal",
    "bus timetable", "parcel tracking 99317", "dentist appointment", "marathon training",
    # medium (5-9 tokens): questions and requests
    "when does the swimming pool close today", "how do I renew my passport",
    "who won the cup final last year", "what is the capital of Australia",
    "where can I buy concert tickets online", "how long should I boil an egg",
    "is the museum open on public holidays", "what are the symptoms of hay fever",
    "how many players are in a rugby team", "which planets have rings around them",
    "can I bring my dog on the train", "how to write a cover letter",
    "what time is the next ferry departure", "recommendations for a weekend in Lisbon",
    "how to improve my chess endgame", "why do leaves change colour in autumn",
    "what does the new tenancy law change", "best exercises for lower back pain",
    "how to register a change of address", "who painted the ceiling of the chapel",
    "what is the history of the Olympic games", "how to learn a language quickly",
    "where is the nearest post office branch", "rules for the neighbourhood recycling bins",
    "when is the deadline for course enrolment", "how do volcanoes form under the ocean",
    "what should I pack for a ski trip", "how to reset the router settings",
    "which vaccines are needed for travelling abroad", "is it going to rain this weekend",
    # long (>= 10 tokens): prose
    "the committee will meet again after the summer holidays to discuss the proposal in detail",
    "our team lost the final match on penalties after a goalless draw in extra time",
    "the village festival starts on Friday evening with music, food stalls and a lantern parade",
    "she moved to the coast after retiring and now spends her mornings walking along the cliffs",
    "please remember that the office will be closed on Monday because of the public holiday",
    "the novel follows three generations of a family through war, emigration and reconciliation",
    "heavy snowfall in the mountains has closed several passes and delayed trains across the region",
    "the orchestra rehearsed the symphony twice before the premiere in the newly restored concert hall",
    "applicants must submit two references and a short essay explaining their motivation for the course",
    "the city council voted to extend the cycle lanes and reduce speed limits near schools",
    "after the storm the volunteers cleared fallen branches from the paths in the park",
    "the lecture explained how ancient sailors navigated by the stars before the invention of the compass",
    "we recommend booking early because the guided tours of the castle fill up quickly in summer",
    "the study found that people who sleep less than six hours a night report more stress",
    "the farmers market moves to the town square during the renovation of the old hall",
    "tickets purchased online can be collected at the box office up to an hour before the show",
    "the museum's new exhibition brings together paintings that have not been shown in public for decades",
    "due to maintenance work the swimming pool will be closed for the first two weeks of March",
    "the coach praised the young players for their discipline and energy throughout the whole season",
    "many migrating birds rest in the wetlands before continuing their journey south for the winter",
    "the recipe calls for fresh herbs, a squeeze of lemon and a pinch of sea salt",
    "the debate about the new stadium divided the town for most of the past year",
    "visitors are asked to keep to the marked trails to protect the nesting areas of rare birds",
    "the theatre company is looking for volunteers to help with costumes, lighting and ticket sales",
    "the documentary tells the story of the engineers who built the first tunnel under the mountains",
    "students who miss the exam for medical reasons may apply for a second date in autumn",
    "the harbour was busy with fishing boats returning early because of the approaching storm",
    "the annual charity run raised more money than ever before thanks to local sponsors",
    "the hotel offers a shuttle service from the airport and breakfast is served until ten",
    "the old bridge will be replaced by a wider structure with separate lanes for pedestrians",
)

__all__ = ["NULL_QUERIES"]
